"""The Celery configuration API and workers share, and the one call that enqueues a run.

The API enqueues by task name (`send_task`), so it needs neither the worker's code nor GPUs.
"""

from __future__ import annotations

from celery import Celery

from common.fleet.sizes import ResourceSize, queue_name
from common.settings import Settings

RUN_TASK = "dlaas.run_training"
PING_TASK = "dlaas.ping"


def make_celery(settings: Settings, main: str = "dlaas") -> Celery:
    app = Celery(main, broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        # Only JSON crosses the broker, and only a run id: credentials stay in the run record.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Runs last hours or days. With late acknowledgement the Redis transport re-delivers
        # an unacknowledged message after visibility_timeout and a second copy would start,
        # so messages are acknowledged when received and the run's own state (claimed
        # atomically in the run store) decides what is alive.
        task_acks_late=False,
        # No prefetch: a message waiting behind a days-long run on one node should be taken
        # by the next free node instead, and could otherwise be re-delivered meanwhile.
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        # One run at a time per worker: a worker owns one GPU set.
        worker_concurrency=1,
        # Events on, so Flower sees each task (name, run id, worker, state).
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_expires=settings.result_expires_seconds,
        task_default_queue=queue_name(ResourceSize.SMALL),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


def enqueue_run(app: Celery, run_id: str, size: ResourceSize) -> str:
    """Put the run on its size's queue; the message carries the run id and nothing else.

    Without a result: the run's state is in the run store, and the worker writes the run's
    progress as the task's state itself (worker/monitors.py), its end state last. The worker
    stores neither the task's start nor its return value (two writes per run fewer)."""
    result = app.send_task(RUN_TASK, args=[run_id], queue=queue_name(size), ignore_result=True)
    return result.id
