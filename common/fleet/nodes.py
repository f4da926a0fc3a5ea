"""The fleet as Redis sees it: each worker's heartbeat record, its GPU ledger (which run holds
which GPUs), and drain requests."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import redis

from common import keys

# A hold is tried again this many times when another start on the node changed the ledger.
HOLD_TRIES = 50

# A lost node stays listed (as lost) this long after its last heartbeat.
LOST_NODE_KEPT_SECONDS = 24 * 3600


class NodeStore:
    def __init__(self, connection: redis.Redis, heartbeat_ttl_seconds: float = 15.0):
        self.redis = connection
        self.ttl_ms = int(heartbeat_ttl_seconds * 1000)

    def heartbeat(self, name: str, info: dict) -> None:
        now = time.time()
        record = dict(info, name=name, last_heartbeat=now)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.worker(name), json.dumps(record), px=self.ttl_ms)
            pipe.pexpire(keys.worker_gpus(name), self.ttl_ms)
            pipe.zadd(keys.workers(), {name: now})
            pipe.zremrangebyscore(keys.workers(), "-inf", now - LOST_NODE_KEPT_SECONDS)
            pipe.execute()

    def forget(self, name: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.worker(name), keys.drain(name), keys.worker_gpus(name))
            pipe.zrem(keys.workers(), name)
            pipe.execute()

    def list(self) -> list[dict]:
        """Every node seen lately: live ones with their record, lost ones as `lost`."""
        seen = self.redis.zrevrange(keys.workers(), 0, -1, withscores=True)
        with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in seen:
                _ask(pipe, name)
            answers = pipe.execute()
        nodes = []
        for i, (name, last) in enumerate(seen):
            node = _live(*answers[3 * i : 3 * i + 3])
            nodes.append(node or {"name": name, "last_heartbeat": last, "status": "lost"})
        return nodes

    def record(self, name: str) -> dict | None:
        """One live node's record as list() gives it (None: not up), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            _ask(pipe, name)
            return _live(*pipe.execute())

    def caches(self, names: list[str]) -> dict[str, dict[str, int]]:
        """The data-cache counters of these nodes (hits, misses, ...), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.worker_cache(name))
            answers = pipe.execute()
        return {
            name: {k: int(v) for k, v in counted.items()}
            for name, counted in zip(names, answers, strict=True)
        }

    # --- the GPU ledger: which run holds which GPUs of a node --------------------------

    def held(self, name: str) -> dict[str, dict]:
        """Every run holding GPUs on the node: run id -> {gpus, slot, size, started_at,
        timeout_seconds, pid}."""
        return _entries(self.redis.hgetall(keys.worker_gpus(name)))

    def hold(
        self, name: str, run_id: str, decide: Callable[[dict[str, dict]], dict | None]
    ) -> dict | None:
        """Add the run to the node's ledger with the entry `decide(held)` makes from the
        ledger as it is (None: the run does not start now), in one transaction: two starts
        on one node never see the same free GPUs. Returns the entry written, or None."""
        key = keys.worker_gpus(name)
        with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(HOLD_TRIES):
                try:
                    pipe.watch(key)
                    entry = decide(_entries(pipe.hgetall(key)))
                    if entry is None:
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hset(key, run_id, json.dumps(entry))
                    pipe.pexpire(key, self.ttl_ms)
                    pipe.execute()
                    return entry
                except redis.WatchError:
                    continue
        raise RuntimeError(f"node {name}: its GPU ledger kept changing; {run_id} not started")

    def release(self, name: str, run_id: str) -> None:
        """The run holds none of the node's GPUs any more."""
        self.redis.hdel(keys.worker_gpus(name), run_id)

    def wake(self, name: str) -> None:
        """Tell the node's consumer control that its ledger changed (a run freed GPUs)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.worker_wake(name), 1)
            pipe.pexpire(keys.worker_wake(name), self.ttl_ms)
            pipe.execute()

    def wait_wake(self, name: str, timeout: float) -> bool:
        """Until woken or `timeout` seconds pass; True when woken (the wakes are used up)."""
        woken = self.redis.blpop([keys.worker_wake(name)], timeout=timeout)
        if woken:
            self.redis.delete(keys.worker_wake(name))
        return woken is not None

    def count_cache(self, name: str, **figures: int) -> None:
        """Add to the node's data-cache counters (hits, misses, their bytes, evictions)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for figure, amount in figures.items():
                if amount:
                    pipe.hincrby(keys.worker_cache(name), figure, amount)
            pipe.execute()

    def clear_held(self, name: str) -> None:
        """A worker starting afresh: no run of an earlier process holds its GPUs."""
        self.redis.delete(keys.worker_gpus(name))

    def glance(self, name: str) -> tuple[dict[str, dict], float | None]:
        """What a node's consumer control looks at each tick, in one round trip: its ledger
        (as held()) and its drain deadline (as drain_deadline())."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.worker_gpus(name))
            pipe.get(keys.drain(name))
            ledger, drain = pipe.execute()
        return _entries(ledger), None if drain is None else float(drain)

    def request_drain(self, name: str, deadline: float = math.inf) -> None:
        """Ask a worker to take no new run; at `deadline` (epoch seconds) its run is stopped
        and handed back. The default lets the running run finish."""
        self.redis.set(keys.drain(name), "inf" if math.isinf(deadline) else repr(deadline))

    def drain_deadline(self, name: str) -> float | None:
        value = self.redis.get(keys.drain(name))
        return None if value is None else float(value)

    def clear_drain(self, name: str) -> None:
        self.redis.delete(keys.drain(name))


def _ask(pipe, name: str) -> None:
    """Queue the reads of a node's record that _live makes one of: heartbeat, drain, ledger."""
    pipe.get(keys.worker(name))
    pipe.get(keys.drain(name))
    pipe.hgetall(keys.worker_gpus(name))


def _live(record: str | None, drain: str | None, ledger: dict | None) -> dict | None:
    """A live node's record as list() gives it, from its heartbeat, drain and ledger keys
    (None: no heartbeat)."""
    if not record:
        return None
    node = json.loads(record)
    node["status"] = "draining" if drain is not None else "ready"
    node.update(_ledger_fields(node.get("gpus", []), _entries(ledger)))
    return node


def _entries(ledger: dict[str, str] | None) -> dict[str, dict]:
    return {run_id: json.loads(entry) for run_id, entry in (ledger or {}).items()}


def _ledger_fields(gpus: list[int], held: dict[str, dict]) -> dict:
    """What a node record says of its ledger: each run and its GPUs (by first GPU), the
    free GPUs, and `run`, the first of them (None: idle)."""
    runs = sorted(
        ({"run_id": run_id, **entry} for run_id, entry in held.items()),
        key=lambda r: (min(r["gpus"], default=-1), r["started_at"], r["run_id"]),
    )
    taken = {gpu for r in runs for gpu in r["gpus"]}
    return {
        "runs": runs,
        "free_gpus": [g for g in gpus if g not in taken],
        "run": runs[0]["run_id"] if runs else None,
    }
