"""`GET /metrics`: the service's figures in Prometheus text format, read from Redis at each
scrape so every API process reports the same numbers. Holds no secret."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from api.openapi import contract
from api.services import Services, current_services
from common import stats
from common.fleet.sizes import ResourceSize, queue_name
from common.states import RunState

bp = Blueprint("metrics", __name__)
ACTIVE = (RunState.PENDING, RunState.DOWNLOADING, RunState.PROCESSING, RunState.STORING)
CACHE_FIGURES = (
    ("hits", "Objects staged from a node's data cache"),
    ("hit_bytes", "Bytes staged from a node's data cache"),
    ("misses", "Objects a node's data cache fetched from the store"),
    ("miss_bytes", "Bytes a node's data cache fetched from the store"),
    ("evictions", "Objects removed from a node's data cache past its size"),
)


class ServiceCollector:
    def __init__(self, services: Services):
        self.services = services

    def collect(self):
        figures = stats.read(self.services.redis)
        yield from self._runs(figures)
        yield from self._transfers(figures)
        yield from self._fleet()

    def _runs(self, figures: dict[str, float]):
        """Runs by state and size, the queues, submissions, ends and durations."""
        sizes = [s.value for s in ResourceSize]
        runs = GaugeMetricFamily(
            "dlaas_runs", "Runs not yet ended, by state and size", labels=["state", "size"]
        )
        for state in ACTIVE:
            for size in sizes:
                runs.add_metric(
                    [state.value, size], max(0.0, figures.get(f"active:{state.value}:{size}", 0.0))
                )
        yield runs

        queued = GaugeMetricFamily(
            "dlaas_queue_length", "Messages waiting on each size's queue", labels=["size"]
        )
        with self.services.redis.pipeline(transaction=False) as pipe:
            for size in ResourceSize:
                pipe.llen(queue_name(size))
            lengths = pipe.execute()
        for size, length in zip(sizes, lengths, strict=True):
            queued.add_metric([size], length)
        yield queued

        submitted = CounterMetricFamily("dlaas_submissions", "Runs accepted", labels=["size"])
        for size in sizes:
            submitted.add_metric([size], figures.get(f"submitted:{size}", 0.0))
        yield submitted

        ended = CounterMetricFamily(
            "dlaas_runs_ended",
            "Runs that reached an end state",
            labels=["state", "size", "error_code"],
        )
        for field, value in figures.items():
            if field.startswith("ended:"):
                _, state, size, code = field.split(":")
                ended.add_metric([state, size, "" if code == "-" else code], value)
        yield ended

        duration = HistogramMetricFamily(
            "dlaas_run_duration_seconds", "From submission to end state", labels=["size"]
        )
        for size in sizes:
            count = figures.get(f"duration_count:{size}", 0.0)
            buckets = [
                (str(le), figures.get(f"duration_bucket:{size}:{le}", 0.0))
                for le in stats.DURATION_BUCKETS
            ] + [("+Inf", count)]
            duration.add_metric([size], buckets, figures.get(f"duration_sum:{size}", 0.0))
        yield duration

    @staticmethod
    def _transfers(figures: dict[str, float]):
        for name, field, text in (
            ("dlaas_staged_bytes", "staged_bytes", "Bytes staged into runs"),
            ("dlaas_staging_seconds", "staging_seconds", "Seconds spent staging"),
            ("dlaas_stored_bytes", "stored_bytes", "Bytes stored from runs"),
            ("dlaas_storing_seconds", "storing_seconds", "Seconds spent storing"),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], figures.get(field, 0.0))
            yield counter

    def _fleet(self):
        """Nodes by status, their GPUs busy and free (the ledgers), their data caches."""
        nodes = GaugeMetricFamily("dlaas_nodes", "Workers by status", labels=["status"])
        gpus = GaugeMetricFamily("dlaas_gpus", "GPUs of live workers", labels=["state"])
        listed = self.services.nodes.list()
        for status in ("ready", "draining", "lost"):
            nodes.add_metric([status], sum(1 for n in listed if n["status"] == status))
        live = [n for n in listed if n["status"] != "lost"]
        busy = sum(len(n.get("gpus", [])) - len(n.get("free_gpus", [])) for n in live)
        total = sum(len(n.get("gpus", [])) for n in live)
        gpus.add_metric(["busy"], busy)
        gpus.add_metric(["free"], total - busy)
        yield nodes
        yield gpus
        cache = {
            figure: CounterMetricFamily(f"dlaas_data_cache_{figure}", text, labels=["node"])
            for figure, text in CACHE_FIGURES
        }
        # One round trip for every node's counters: a scrape's cost is its output's.
        for name, counted in self.services.nodes.caches([n["name"] for n in listed]).items():
            for figure, family in cache.items():
                family.add_metric([name], counted.get(figure, 0))
        yield from cache.values()


@bp.get("/metrics")
@contract(
    "The service's figures, Prometheus text format",
    tag="service",
    ok={
        200: {
            "description": "Runs by state and size, queue lengths, nodes, GPUs, ...",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(current_services()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
