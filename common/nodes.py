"""The fleet as Redis sees it: each worker's heartbeat record, and drain requests."""

from __future__ import annotations

import json
import math
import time

import redis

from common import keys

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
            pipe.zadd(keys.workers(), {name: now})
            pipe.zremrangebyscore(keys.workers(), "-inf", now - LOST_NODE_KEPT_SECONDS)
            pipe.execute()

    def forget(self, name: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.worker(name), keys.drain(name), keys.worker_run(name))
            pipe.zrem(keys.workers(), name)
            pipe.execute()

    def list(self) -> list[dict]:
        """Every node seen lately: live ones with their record, lost ones as `lost`."""
        seen = self.redis.zrevrange(keys.workers(), 0, -1, withscores=True)
        with self.redis.pipeline(transaction=False) as pipe:
            for name, _ in seen:
                pipe.get(keys.worker(name))
                pipe.get(keys.drain(name))
                pipe.get(keys.worker_run(name))
            answers = pipe.execute()
        nodes = []
        for i, (name, last) in enumerate(seen):
            record, drain, run = answers[3 * i : 3 * i + 3]
            if record:
                node = json.loads(record)
                node["status"] = "draining" if drain is not None else "ready"
                node["run"] = run
            else:
                node = {"name": name, "last_heartbeat": last, "status": "lost"}
            nodes.append(node)
        return nodes

    def set_running(self, name: str, run_id: str | None) -> None:
        """The run this worker executes now (None: idle)."""
        if run_id is None:
            self.redis.delete(keys.worker_run(name))
        else:
            self.redis.set(keys.worker_run(name), run_id)

    def request_drain(self, name: str, deadline: float = math.inf) -> None:
        """Ask a worker to take no new run; at `deadline` (epoch seconds) its run is stopped
        and handed back. The default lets the running run finish."""
        self.redis.set(keys.drain(name), "inf" if math.isinf(deadline) else repr(deadline))

    def drain_deadline(self, name: str) -> float | None:
        value = self.redis.get(keys.drain(name))
        return None if value is None else float(value)

    def clear_drain(self, name: str) -> None:
        self.redis.delete(keys.drain(name))
