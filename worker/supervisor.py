"""Watches over a claimed run from a thread: keeps its lease alive, and decides when it must
stop: cancelled by its user, past its time limit, its worker draining, or its claim lost.

Redis may be unreachable for a while: the supervisor then keeps the command running and
tries again at its next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum

import redis

from common.fleet.nodes import NodeStore
from common.runstore import RunStore
from worker.keptthreads import kept_pool

log = logging.getLogger(__name__)


class StopReason(str, Enum):
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    DRAIN = "drain"
    LOST = "lost"


@dataclass
class StopRequest:
    reason: StopReason
    detail: str


class StopFlag:
    """Set once, by the supervisor; read by staging and the process runner."""

    def __init__(self):
        self._event = threading.Event()
        self.request: StopRequest | None = None

    def set(self, reason: StopReason, detail: str) -> None:
        if not self._event.is_set():
            self.request = StopRequest(reason, detail)
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class RunSupervisor:
    """Its loop runs on a thread the process keeps (worker/keptthreads.py), not one of its
    own: `start`, then `finish` once the attempt ended."""

    def __init__(
        self,
        runs: RunStore,
        nodes: NodeStore,
        run_id: str,
        worker: str,
        attempt: int,
        lease_refresh_seconds: float,
        tick_seconds: float = 0.5,
        stop: StopFlag | None = None,
    ):
        self.runs, self.nodes = runs, nodes
        self.run_id, self.worker, self.attempt = run_id, worker, attempt
        self.refresh_every = lease_refresh_seconds
        self.tick = min(tick_seconds, lease_refresh_seconds)
        self.stop = stop or StopFlag()
        self._done = threading.Event()
        self._deadline: float | None = None
        self._limit_text = ""
        self.redis_errors = 0
        self._loop: Future | None = None

    def start(self) -> None:
        self._loop = kept_pool("supervise").submit(self.run)

    def is_alive(self) -> bool:
        """Whether its loop still runs."""
        return self._loop is not None and not self._loop.done()

    def start_clock(self, seconds: float) -> None:
        """The run's time limit starts now (when its command starts)."""
        if seconds > 0:
            self._deadline = time.monotonic() + seconds
            self._limit_text = f"{seconds:g} s"

    def finish(self) -> None:
        self._done.set()
        if self._loop is not None:
            futures.wait((self._loop,), timeout=5)

    def run(self) -> None:
        # The first look one tick after the claim, which has just set the lease (and a cancel
        # that came before is noticed when staging ends): not on the run's way to its command.
        next_refresh = 0.0
        outage_since: float | None = None
        while not self._done.wait(self.tick):
            now = time.monotonic()
            if self._deadline is not None and now > self._deadline:
                self.stop.set(StopReason.TIMEOUT, f"time limit of {self._limit_text} reached")
            try:
                if now >= next_refresh:
                    if not self.runs.refresh_lease(self.run_id, self.worker, self.attempt):
                        self.stop.set(StopReason.LOST, "this worker's claim on the run was lost")
                    next_refresh = now + self.refresh_every
                cancelled = self.runs.cancel_detail(self.run_id)
                if cancelled:
                    self.stop.set(StopReason.CANCEL, cancelled)
                deadline = self.nodes.drain_deadline(self.worker)
                if deadline is not None and time.time() >= deadline:
                    self.stop.set(StopReason.DRAIN, "worker shut down")
                if outage_since is not None:
                    log.warning(
                        "%s: Redis is back after %.1f s",
                        self.run_id,
                        time.monotonic() - outage_since,
                    )
                    outage_since = None
            except redis.RedisError as exc:
                self.redis_errors += 1
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning(
                        "%s: Redis unreachable (%s); the command keeps running", self.run_id, exc
                    )
