"""`dlaas-reconciler`: ends or re-queues runs whose worker stopped refreshing their lease.

One instance is active at a time (a Redis lock with a TTL); others stand by. A run in
DOWNLOADING, PROCESSING or STORING whose lease has lapsed is given one more lease period
(its worker may just be reconnecting after a Redis outage), then ends FAILED S104
"node lost: <worker>", or goes back to its queue while its retry policy allows.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid

import redis

from common import keys
from common.artifacts import ArtifactStore
from common.runstore import InvalidTransition, RunNotFound, RunStore
from common.settings import Settings
from common.states import ACTIVE, ErrorCode, RunState
from common.taskqueue import enqueue_run, make_celery
from worker.activelock import ActiveLock, start_service

log = logging.getLogger("dlaas.reconciler")


class Reconciler:
    def __init__(
        self, settings: Settings, connection: redis.Redis, requeue=None, identity: str | None = None
    ):
        self.settings = settings
        self.redis = connection
        self.runs = RunStore(connection, settings.retention_seconds, settings.lease_ttl_seconds)
        self.requeue = requeue
        self.artifacts = ArtifactStore.from_settings(settings)
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        ttl = 3 * settings.reconcile_interval_seconds
        self.lock = ActiveLock(connection, keys.reconciler_lock(), self.identity, ttl)
        # run id -> (attempt, monotonic time its lapsed lease was first seen)
        self._lapsed: dict[str, tuple[int, float]] = {}

    def hold_lock(self) -> bool:
        return self.lock.hold()

    def pass_once(self) -> list[tuple[str, str]]:
        """One look at every active run; returns what was done, as (run id, outcome)."""
        done = []
        now = time.monotonic()
        active = set(self.runs.active_ids())
        for run_id in list(self._lapsed):
            if run_id not in active:
                del self._lapsed[run_id]
        for run_id in sorted(active):
            run = self.runs.get(run_id)
            if run is None or run.state not in ACTIVE:
                continue
            if self.runs.lease_holder(run_id) is not None:
                self._lapsed.pop(run_id, None)
                continue
            first = self._lapsed.get(run_id)
            if first is None or first[0] != run.attempt:
                self._lapsed[run_id] = (run.attempt, now)
                continue
            if now - first[1] < self.settings.lease_ttl_seconds:
                continue
            done.append((run_id, self._node_lost(run)))
            self._lapsed.pop(run_id, None)
        return done

    def _node_lost(self, run) -> str:
        try:
            if run.attempt <= self.settings.run_retries and self.requeue is not None:
                self.runs.transition(
                    run.id,
                    RunState.PENDING,
                    f"node lost: {run.worker}; queued again (attempt {run.attempt} of "
                    f"{self.settings.run_retries + 1})",
                    attempt=run.attempt,
                )
                self.requeue(run.id, run.resource)
                log.warning("%s: node %s lost, queued again", run.id, run.worker)
                return "requeued"
            self.runs.transition(
                run.id,
                RunState.FAILED,
                f"node lost: {run.worker}",
                ErrorCode.NODE_LOST,
                attempt=run.attempt,
            )
            log.warning("%s: node %s lost, run FAILED (S104)", run.id, run.worker)
            return "failed"
        except (InvalidTransition, RunNotFound) as exc:
            return f"left alone ({exc})"  # it moved meanwhile: its worker is alive after all

    def serve(self, stop_after: float | None = None) -> None:
        deadline = None if stop_after is None else time.monotonic() + stop_after
        active = False
        while deadline is None or time.monotonic() < deadline:
            try:
                holding = self.hold_lock()
                if holding != active:
                    log.info(
                        "reconciler %s: %s", "active" if holding else "standing by", self.identity
                    )
                    active = holding
                if holding:
                    self.pass_once()
            except redis.RedisError as exc:
                log.warning("Redis unreachable (%s); trying again", exc)
                self._lapsed.clear()  # an outage is no evidence of a lost node
            time.sleep(self.settings.reconcile_interval_seconds)


def main(argv: list[str] | None = None) -> int:
    started = start_service("dlaas-reconciler", __doc__, argv)
    if started is None:
        return 2
    settings, connection = started
    celery = make_celery(settings, main="dlaas-reconciler")
    reconciler = Reconciler(settings, connection, lambda rid, size: enqueue_run(celery, rid, size))
    print(
        f"dlaas-reconciler {reconciler.identity}: every {settings.reconcile_interval_seconds:g} s, "
        f"lease TTL {settings.lease_ttl_seconds:g} s, retries {settings.run_retries}",
        flush=True,
    )
    reconciler.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
