"""`dlaas-reconciler`: ends or re-queues runs whose worker stopped refreshing their lease.

One instance is active at a time (a Redis lock with a TTL); others stand by. A run in
DOWNLOADING, PROCESSING or STORING whose lease has lapsed is given one more lease period
(its worker may just be reconnecting after a Redis outage), then ends FAILED S104
"node lost: <worker>", or goes back to its queue while its retry policy allows.

A PENDING run whose message is on no queue, and that no worker has marked taken, lost its
message with a worker that died holding it, and is queued again (a duplicate message is
harmless: a run is claimed once).

What a pass costs does not grow with the runs waiting or the fleet's size: the lapsed leases
are a range of the lease index (dlaas:leases); a lost message shows as a deficit, more runs
waiting (the index's lengths) than messages on the queues and messages taken (list lengths
and a count), and only a deficit that lasts a lease TTL makes it look for which runs lost
theirs (then reading the queues and the index once: a lost message is rare).
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
from common.fleet.sizes import ResourceSize, queue_name
from common.fleet.waitlist import WaitList
from common.ids import RUN_ID_IN_TEXT
from common.runstore import InvalidTransition, RunNotFound, RunStore
from common.settings import Settings
from common.states import ACTIVE, ErrorCode, RunState
from common.taskqueue import enqueue_run, make_celery
from worker.activelock import ActiveLock, start_service

log = logging.getLogger("dlaas.reconciler")

# The suffixes of kombu's Redis lists of one queue: "" and "\x06\x16<priority>".
PRIORITY_LISTS = ("", *(f"\x06\x16{p}" for p in range(1, 10)))
# Every Redis list a run's message can wait in.
QUEUE_LISTS = tuple(f"{queue_name(s)}{step}" for s in ResourceSize for step in PRIORITY_LISTS)


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
        # monotonic time since when more runs wait than messages are queued or taken
        self._deficit_since: float | None = None

    def hold_lock(self) -> bool:
        return self.lock.hold()

    def pass_once(self) -> list[tuple[str, str]]:
        """One look at the runs whose lease lapsed (the lease index), and at the messages;
        returns what was done, as (run id, outcome)."""
        done = []
        now = time.monotonic()
        lapsed = self.runs.lapsed_leases()
        lapsed_now = set(lapsed)
        for run_id in list(self._lapsed):
            if run_id not in lapsed_now:
                del self._lapsed[run_id]
        records = {run.id: run for run in self.runs.records(lapsed)}
        for run_id in lapsed:
            run = records.get(run_id)
            if run is None or run.state not in ACTIVE:
                self.runs.forget_lease(run_id)  # ended meanwhile
                self._lapsed.pop(run_id, None)
                continue
            if self.runs.lease_holder(run_id) is not None:
                self._lapsed.pop(run_id, None)  # refreshed since (or its worker's clock is behind)
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

    def sweep_active(self) -> None:
        """Once, on becoming active: every active run into the lease index (a store from
        before it, or an entry lost), so that the passes that follow see every lease."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in self.runs.active_ids():
                pipe.zadd(keys.leases(), {run_id: time.time()}, nx=True)
            pipe.execute()
        self.runs.index_waiting()

    def _queued_messages(self) -> int:
        with self.redis.pipeline(transaction=False) as pipe:
            for name in QUEUE_LISTS:
                pipe.llen(name)
            return sum(pipe.execute())

    def _lost_messages(self, now: float) -> list[tuple[str, str]]:
        """Queue again each PENDING run whose message is gone (see the module's doc)."""
        grace = self.settings.lease_ttl_seconds
        waiting = sum(WaitList(self.redis).lengths().values())
        in_flight = self.runs.messages_in_flight(time.time() - grace)
        if waiting <= self._queued_messages() + in_flight:
            self._deficit_since = None
            return []
        if self._deficit_since is None:
            self._deficit_since = now
        if now - self._deficit_since < grace:
            return []  # a message on its way (submitted, or taken and not yet marked)
        return self._requeue_unqueued(grace)

    def _requeue_unqueued(self, grace: float) -> list[tuple[str, str]]:
        """The deficit lasted: which waiting runs have no message on a queue and none taken
        (reads the queues and the index once), queued again. Runs that took their place in
        the last `grace` seconds are left: their message may be on its way."""
        queued = {
            run_id
            for name in QUEUE_LISTS
            for raw in self.redis.lrange(name, 0, -1)
            for run_id in RUN_ID_IN_TEXT.findall(str(raw))
        }
        waitlist, done = WaitList(self.redis), []
        recent = time.time() - grace
        for size, count in waitlist.lengths().items():
            for queued_run in waitlist.head(size, count):
                run_id = queued_run.run_id
                if queued_run.since > recent or run_id in queued:
                    continue
                if self.runs.message_taken(run_id) is not None:
                    continue
                self.requeue(run_id, size)
                log.warning("%s: PENDING with no message (its worker died holding it)", run_id)
                done.append((run_id, "message lost, queued again"))
        self._deficit_since = None
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
                        self.sweep_active()
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
