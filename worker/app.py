"""The worker's Celery app: the shared configuration plus its two tasks, bound to a context."""

from __future__ import annotations

from celery import Celery

from common.taskqueue import PING_TASK, RUN_TASK, make_celery
from worker.training import WorkerContext, run_training


def create_worker_app(ctx: WorkerContext) -> Celery:
    app = make_celery(ctx.settings, main="dlaas-worker")

    @app.task(name=RUN_TASK, ignore_result=False)
    def run_training_task(run_id: str) -> str:
        # Thin on purpose: everything happens in plain functions testable without a broker.
        return run_training(run_id, ctx)

    @app.task(name=PING_TASK)
    def ping() -> str:
        return "pong"

    return app
