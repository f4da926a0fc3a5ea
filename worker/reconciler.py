"""`dlaas-reconciler`: ends or re-queues runs whose worker stopped refreshing their lease.

One instance is active at a time (a Redis lock with a TTL); others stand by. A run in
DOWNLOADING, PROCESSING or STORING whose lease has lapsed is given one more lease period
(its worker may just be reconnecting after a Redis outage), then ends FAILED S104
"node lost: <worker>", or goes back to its queue while its retry policy allows.

A PENDING run whose message is on no queue, and that no worker has marked taken, lost its
message with a worker that died holding it: seen so twice, a lease TTL apart, it is queued
again (a duplicate message is harmless: a run is claimed once).
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
from common.clock import parse_iso
from common.fleet.sizes import ResourceSize, queue_name
from common.runstore import InvalidTransition, RunNotFound, RunStore
from common.settings import Settings
from common.states import ACTIVE, ErrorCode, RunState
from common.taskqueue import enqueue_run, make_celery
from worker.activelock import ActiveLock, start_service

log = logging.getLogger("dlaas.reconciler")

# The suffixes of kombu's Redis lists of one queue: "" and "\x06\x16<priority>".
PRIORITY_LISTS = ("", *(f"\x06\x16{p}" for p in range(1, 10)))


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
        # run id -> monotonic time it was first seen PENDING with no message anywhere
        self._unqueued: dict[str, float] = {}

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
        if self.requeue is not None:
            done += self._lost_messages(now)
        return done

    def _lost_messages(self, now: float) -> list[tuple[str, str]]:
        """Queue again each PENDING run whose message is gone (see the module's doc)."""
        # kombu's Redis lists: the queue's own, and one per priority step (none used).
        lists = [f"{queue_name(s)}{step}" for s in ResourceSize for step in PRIORITY_LISTS]
        queued = "\n".join(str(raw) for name in lists for raw in self.redis.lrange(name, 0, -1))
        grace = self.settings.lease_ttl_seconds
        done, missing = [], set()
        for run in self.runs.pending():
            if run.id in queued or self.runs.message_taken(run.id) is not None:
                continue
            changed = parse_iso(run.updated_at or run.submitted_at).timestamp()
            if time.time() - changed < grace:
                continue  # just made: its message may be on its way
            missing.add(run.id)
            first = self._unqueued.setdefault(run.id, now)
            if now - first >= grace:
                self.requeue(run.id, run.resource)
                log.warning("%s: PENDING with no message (its worker died holding it)", run.id)
                done.append((run.id, "message lost, queued again"))
                missing.discard(run.id)
        self._unqueued = {k: v for k, v in self._unqueued.items() if k in missing}
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
