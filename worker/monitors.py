"""A run's progress for monitors (Flower): the Celery task's custom state in the result backend
(Flower's task result view) and a `task-progress` event, sent by one thread of the pool process
so that a run never waits for them.

Each report sent costs a GET, a SETEX and a PUBLISH for the state, and kombu's producer and a
PUBLISH for the event: about a millisecond of the pool process's CPU, taken from the run
while it stages and starts (the GIL). The reports of a `true` run (its transfers, PROCESSING,
STORING, its end) come within a few milliseconds; so the thread waits SETTLE_SECONDS after
the first report it gets and then sends, per task, one state and one event with what was
told meanwhile, the later fields over the earlier ones. A monitor sees the last state a
fifth of a second late; a run's start no longer pays for six of them.

Progress is a courtesy: when Redis is away the thread retries as Celery's publishing does,
and reports beyond MAX_WAITING are dropped rather than held in memory."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from celery import Celery

log = logging.getLogger(__name__)

MAX_WAITING = 1000
SETTLE_SECONDS = 0.2


class ProgressEvents:
    def __init__(self, app: Celery):
        self.app = app
        self._lock = threading.Lock()
        # The sending thread's process and queue: a forked pool child starts its own.
        self._pid = 0
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()

    def send(self, task_id: str, hostname: str | None, fields: dict) -> None:
        """Queue one progress report of task `task_id` (fields: run id, state, bytes)."""
        waiting = self._queue_here()
        if waiting.qsize() >= MAX_WAITING:
            log.debug("%s: progress dropped, %d reports wait already", task_id, MAX_WAITING)
            return
        waiting.put((task_id, hostname, fields))

    def _queue_here(self) -> queue.SimpleQueue:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._waiting = os.getpid(), queue.SimpleQueue()
                threading.Thread(
                    target=self._send_all, args=(self._waiting,), name="dlaas-progress", daemon=True
                ).start()
            return self._waiting

    def _send_all(self, waiting: queue.SimpleQueue) -> None:
        while True:
            told = [waiting.get()]
            time.sleep(SETTLE_SECONDS)
            while True:
                try:
                    told.append(waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send_batch(merged(told))
            except Exception as exc:
                log.debug("progress not sent: %s", exc)

    def _send_batch(self, reports: dict[tuple[str, str | None], dict]) -> None:
        policy = self.app.conf.task_publish_retry_policy
        for (task_id, _), fields in reports.items():
            self.app.backend.store_result(task_id, fields, fields.get("run_state", "PROGRESS"))
        for hostname in {hostname for _, hostname in reports}:
            with self.app.events.default_dispatcher(hostname=hostname) as dispatcher:
                for (task_id, host), fields in reports.items():
                    if host == hostname:
                        dispatcher.send(
                            "task-progress", uuid=task_id, retry=True, retry_policy=policy, **fields
                        )


def merged(told: list[tuple[str, str | None, dict]]) -> dict[tuple[str, str | None], dict]:
    """The reports told, one per task: its fields in the order told, later over earlier."""
    reports: dict[tuple[str, str | None], dict] = {}
    for task_id, hostname, fields in told:
        reports.setdefault((task_id, hostname), {}).update(fields)
    return reports
