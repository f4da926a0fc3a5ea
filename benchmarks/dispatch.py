"""Dispatch latency and throughput of the embedded stack, against the floor of its parts.

    .venv/bin/python -m benchmarks.dispatch [--runs 200]

Starts a private embedded stack (Redis, API under gunicorn, one worker, Flower) in a temporary
DLAAS_HOME on free ports, then:
  1. latency: submits N runs whose command is `true` over HTTP, one after another (each waits
     for the previous to end), and takes, per run, the time from submission (the run's
     `submitted_at`) to the command starting (its PROCESSING entry, written just before the
     worker spawns `bash -c`): median and 95th percentile;
  2. throughput: submits N runs back to back and divides N by the time from the first
     submission to the last run's end;
  3. the floor, on the same Redis and worker: a no-op Celery task's round trip
     (`dlaas.ping`, send and get the result) plus spawning `bash -c true` here; medians.
Prints each figure, the ratio of the dispatch median to the floor, and the environment (with
the disk's cost of a new folder, which moves dispatch when runs make theirs on their way).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import redis
import requests

from api.client import read_env_file
from benchmarks.figures import machine, percentile
from benchmarks.privatestack import private_stack
from common.clock import parse_iso
from common.runstore import RunStore
from common.settings import Settings
from common.states import RunState
from common.taskqueue import PING_TASK, make_celery

MANIFEST = """
model_definition:
  name: bench-true
  framework: {name: python, version: "3.11"}
  execution: {command: "true", resource: small}
training_data_reference:
- connection: {path: bench}
  source: {bucket: data, type: local}
training_results_reference:
  connection: {path: bench}
  target: {bucket: results, type: local}
"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


class Bench:
    def __init__(self, home: Path):
        saved = read_env_file(home / "env")
        self.url, token = saved["DLAAS_URL"], saved["DLAAS_TOKEN"]
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {token}"
        zip_path = home / "bench.zip"
        with zipfile.ZipFile(zip_path, "w") as archive:
            archive.writestr("README", "a model that does nothing\n")
        self.zip_bytes = zip_path.read_bytes()
        for bucket in ("data", "results"):
            (home / "store" / "bench" / bucket).mkdir(parents=True, exist_ok=True)

    def submit(self) -> str:
        files = {"model_definition": ("m.zip", self.zip_bytes), "manifest": ("m.yml", MANIFEST)}
        answer = self.http.post(f"{self.url}/v3/models", files=files, timeout=30)
        answer.raise_for_status()
        return answer.json()["model_id"]


def wait_ended(runs: RunStore, run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = runs.get(run_id)
        if run and run.state.terminal:
            if run.state is not RunState.COMPLETED:
                raise RuntimeError(f"{run_id} ended {run.state.value}: {run.status_message}")
            return
        time.sleep(0.002)
    raise RuntimeError(f"{run_id} did not end in {timeout} s")


def start_latency(runs: RunStore, run_id: str) -> float:
    history = runs.history(run_id)
    submitted = next(h.at for h in history if h.state is RunState.PENDING)
    started = next(h.at for h in history if h.state is RunState.PROCESSING)
    return (parse_iso(started) - parse_iso(submitted)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    with private_stack(
        # 200 runs submitted back to back: past the default per-user quota and rate limit.
        "dlaas-bench-",
        DLAAS_MAX_QUEUED_PER_USER="0",
        DLAAS_REQUESTS_PER_MINUTE="0",
    ) as (home, env, ports):
        password = read_env_file(home / "config.env")["DLAAS_REDIS_PASSWORD"]
        settings = Settings.from_env(
            env,
            redis_url=f"redis://:{password}@127.0.0.1:{ports['redis']}/0",
            secret_key="unused-here",
        )
        connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        runs = RunStore(connection)
        bench = Bench(home)

        wait_ended(runs, bench.submit())  # warm up: imports, connections, first fork
        latencies = []
        for _ in range(args.runs):
            run_id = bench.submit()
            wait_ended(runs, run_id)
            latencies.append(start_latency(runs, run_id))

        began = time.monotonic()
        burst = [bench.submit() for _ in range(args.runs)]
        submit_seconds = time.monotonic() - began
        for run_id in burst:
            wait_ended(runs, run_id, timeout=600)
        burst_seconds = time.monotonic() - began

        celery = make_celery(settings, main="dlaas-bench")
        celery.send_task(PING_TASK, queue="dlaas.small").get(timeout=30)
        pings = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            celery.send_task(PING_TASK, queue="dlaas.small").get(timeout=30)
            pings.append(time.perf_counter() - t0)
        spawns = []
        clean = {"PATH": "/usr/bin:/bin"}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], env=clean, check=True)
            spawns.append(time.perf_counter() - t0)
        folders = []  # the disk's cost of a new inode: it varies here from 0.1 to 0.9 ms
        for number in range(args.runs):
            t0 = time.perf_counter()
            (home / f"folder-{number}").mkdir()
            folders.append(time.perf_counter() - t0)

    median = statistics.median(latencies)
    floor = statistics.median(pings) + statistics.median(spawns)
    print(f"dispatch benchmark: {args.runs} runs of `true`, one worker, embedded stack")
    print(
        f"environment: {machine()}, "
        f"PYTHONUNBUFFERED={os.environ.get('PYTHONUNBUFFERED', '(unset)')}, "
        f"runs get a clean environment built by the worker; "
        f"a new folder on the stack's disk: median {statistics.median(folders) * 1000:.2f} ms"
    )
    print("submission -> command start (one at a time)")
    print(
        f"  median {ms(median)}   p95 {ms(percentile(latencies, 0.95))}   "
        f"min {ms(min(latencies))}   max {ms(max(latencies))}"
    )
    print(
        f"throughput, {args.runs} submitted back to back: "
        f"{args.runs / burst_seconds:6.1f} runs completed/s "
        f"(submissions alone: {args.runs / submit_seconds:6.1f}/s)"
    )
    print("floor (same Redis, same worker)")
    print(
        f"  no-op Celery task round trip  median {ms(statistics.median(pings))}   "
        f"p95 {ms(percentile(pings, 0.95))}"
    )
    print(f"  spawn bash -c true            median {ms(statistics.median(spawns))}")
    print(f"  floor (sum of medians)               {ms(floor)}")
    print(f"ratio dispatch median / floor: {median / floor:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
