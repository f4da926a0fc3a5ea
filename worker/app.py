"""The worker's Celery app: the shared configuration, its two tasks bound to a context, and
the hooks that make it a good citizen of the fleet (heartbeat, drain on SIGTERM, reaping)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time

from celery import Celery, signals

from common.clock import iso, utcnow
from common.fleet.sizes import ResourceSize
from common.storage.s3 import warm_up as warm_up_s3
from common.taskqueue import PING_TASK, RUN_TASK, enqueue_run, make_celery
from worker.context import WorkerContext
from worker.monitors import ProgressEvents
from worker.packer import ConsumerControl
from worker.reaper import become_subreaper
from worker.rundirs import remove_stale_spares, spare_folder
from worker.storeagain import StoreAgain
from worker.training import run_training

log = logging.getLogger(__name__)


def create_worker_app(ctx: WorkerContext, sizes: list[str]) -> Celery:
    app = make_celery(ctx.settings, main="dlaas-worker")
    ctx.requeue = lambda run_id, size: enqueue_run(app, run_id, size)

    progress = ProgressEvents(app)

    @app.task(name=RUN_TASK, bind=True)
    def run_training_task(self, run_id: str) -> str:
        # Thin on purpose: everything happens in plain functions testable without a broker.
        # Progress (run id, state, bytes) as the task's custom state in the result backend,
        # which Flower's task result view shows while the run goes on, and as a task event.
        task_id, hostname = self.request.id, self.request.hostname
        return run_training(run_id, ctx, lambda fields: progress.send(task_id, hostname, fields))

    @app.task(name=PING_TASK)
    def ping() -> str:
        return "pong"

    consumers = ConsumerControl(ctx, [ResourceSize(s) for s in sizes])
    _connect_signals(ctx, Heartbeat(ctx, sizes), consumers, StoreAgain(ctx))
    return app


def _connect_signals(
    ctx: WorkerContext, heartbeat: Heartbeat, consumers: ConsumerControl, store_again: StoreAgain
) -> None:
    """The worker's part in the fleet: each pool child a subreaper, the node's heartbeat,
    the consumers of the sizes it can start a run of now, the requests to store kept results
    again, a drain on warm shutdown, the node record removed at the end."""

    @signals.worker_process_init.connect(weak=False)
    def _pool_child_started(**_):
        # Orphans of a run are re-parented to the process executing it, not to init.
        if not become_subreaper():
            log.warning("cannot become a child subreaper: escaped processes may be missed")
        # Read the S3 model once per child, not once per run, then leave every object made
        # so far out of the collector's full passes: those scan only what a run made (with
        # Celery, kombu and botocore's models in them, one took ~0.1 s of a run's staging).
        try:
            warm_up_s3()
        except Exception as exc:  # a node with a broken AWS config may still run local stores
            log.warning("could not read the S3 model ahead of runs: %s", exc)
        gc.freeze()
        spare_folder(ctx.settings.work_dir).make()  # its first run's folder

    @signals.worker_ready.connect(weak=False)
    def _ready(sender=None, **_):
        ctx.nodes.clear_drain(ctx.name)  # a restarted worker does not inherit a drain
        ctx.nodes.clear_held(ctx.name)  # nor GPUs held by the runs of an earlier process
        if removed := remove_stale_spares(ctx.settings.work_dir):
            log.info("removed the spare run folders of ended processes: %s", ", ".join(removed))
        heartbeat.start()
        consumers.start(sender)  # the worker's own consumer: switches made in-process
        store_again.start()

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(sig=None, how=None, exitcode=None, **_):
        # Warm shutdown: Celery stops consuming and waits for the running task; the run's
        # supervisor hands the run back (or fails it S105) once the drain timeout passes.
        deadline = time.time() + ctx.settings.drain_timeout_seconds
        try:
            ctx.nodes.request_drain(ctx.name, deadline)
            log.warning(
                "%s shutting down (%s): draining, running run stopped at %s",
                ctx.name,
                sig,
                iso(utcnow().fromtimestamp(deadline)),
            )
        except Exception:
            log.exception("could not record the drain")

    @signals.worker_shutdown.connect(weak=False)
    def _stopped(**_):
        consumers.stop()
        store_again.stop()
        heartbeat.stop()
        try:
            ctx.nodes.forget(ctx.name)
        except Exception:
            log.exception("could not remove the node record")


class Heartbeat(threading.Thread):
    """Registers this worker's node and refreshes it, from the worker's main process."""

    def __init__(self, ctx: WorkerContext, sizes: list[str]):
        super().__init__(name="dlaas-heartbeat", daemon=True)
        self.ctx = ctx
        self.info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "sizes": sizes,
            "slots": ctx.slots,
            "gpus": list(ctx.gpus.indices),
            "gpu_names": list(ctx.gpus.names),
            "gpu_uuids": list(ctx.gpus.uuids),
            "gpu_memory_bytes": list(ctx.gpus.memory_bytes),
            "gpu_source": ctx.gpus.source,
            "started_at": iso(utcnow()),
            # How its runs are kept apart (worker/sandbox.py), or why they are not.
            "isolation": {"sandbox": ctx.sandbox.on, "detail": ctx.sandbox.reason},
        }
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def beat(self) -> dict:
        """The node's record: what it is, and the environments its cache holds now."""
        held = self.ctx.environments.held()
        kept = ("key", "framework", "version", "accelerator", "python", "requirements", "bytes")
        return dict(
            self.info,
            accelerator=self.ctx.accelerator,
            environments=[{name: meta.get(name) for name in kept} for meta in held],
        )

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.ctx.nodes.heartbeat(self.ctx.name, self.beat())
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            self._halt.wait(self.ctx.settings.worker_heartbeat_seconds)
