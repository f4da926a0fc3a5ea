"""One training run from claim to end state: the plain function the Celery task calls."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis

from common import stats
from common.artifacts import ArtifactStore
from common.clock import iso, utcnow
from common.crypto import CredentialBox, CredentialsError
from common.livelog import LiveLog
from common.manifest import Manifest
from common.modelzip import ModelZipError
from common.nodes import NodeStore
from common.run import Run
from common.runstore import LostClaim, RunNotFound, RunStore
from common.settings import Settings
from common.sizes import ResourceSize
from common.states import ErrorCode, RunState
from common.storage import StorageError, open_store
from common.storage.base import TransferProgress
from worker.gpus import GpuSet
from worker.limits import describe_hit, limit_hit, run_limits
from worker.logpump import ChunkUploader, LiveStreamer
from worker.patience import patiently
from worker.process import (
    Execution,
    RunDirs,
    credential_environment,
    execute,
    expand_command,
    run_environment,
    tail,
)
from worker.progress import ProgressReporter
from worker.reaper import gpus_released
from worker.results import LEARNER, LOG_CHUNKS_PREFIX, store_results
from worker.runuser import (
    RunUserError,
    check_reachable,
    hand_over,
    hold_alone,
    prepare_work_dir,
    reclaim,
    run_user,
)
from worker.staging import stage_data, stage_model
from worker.supervisor import RunSupervisor, StopReason, StopRequest
from worker.usage import UsageSampler

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 3
TRAINING_LOG = "training-log.txt"
LOAD_LOG = "load-data.log"
STORE_LOG = "store-results.log"


@dataclass
class WorkerContext:
    settings: Settings
    runs: RunStore
    nodes: NodeStore
    box: CredentialBox
    artifacts: ArtifactStore
    gpus: GpuSet
    name: str
    # Puts a run id back on its size's queue (the Celery app's send_task); None: cannot.
    requeue: Callable[[str, ResourceSize], None] | None = None


class RunEnded(Exception):
    """The run reached an end state before its pipeline finished."""


class _Run:
    """The claimed run as this worker writes it: every write fenced by the claim's attempt
    and retried through Redis outages."""

    def __init__(
        self,
        run: Run,
        ctx: WorkerContext,
        dirs: RunDirs,
        progress: Callable[[dict], None] | None = None,
    ):
        self.run, self.ctx, self.dirs = run, ctx, dirs
        self.id = run.id
        self.progress = progress

    def write(self, state: RunState, message: str, code: ErrorCode | None = None, **fields) -> Run:
        ctx = self.ctx
        self.tell(run_state=state.value, message=message.splitlines()[0] if message else "")
        return patiently(
            lambda: ctx.runs.transition(
                self.id, state, message, code, attempt=self.run.attempt, **fields
            ),
            ctx.settings.redis_outage_seconds,
            f"{self.id} -> {state.value}",
        )

    def tell(self, **fields) -> None:
        """A progress event for monitors (Flower): run id, state, bytes; never a secret."""
        if self.progress is not None:
            try:
                self.progress(dict(fields, run_id=self.id))
            except Exception as exc:
                log.debug("progress event not sent: %s", exc)

    def fail(self, code: ErrorCode, message: str) -> RunEnded:
        self.write(RunState.FAILED, message, code)
        log.warning("%s failed (%s): %s", self.id, code.value, message.splitlines()[0])
        return RunEnded(message)

    def note(self, text: str, log_name: str = TRAINING_LOG) -> None:
        """A line of the service's own in one of the run's logs (stamped like the pump's)."""
        with open(self.dirs.log / log_name, "a") as f:
            f.write(f"{iso(utcnow())} [dlaas] {text}\n")


def _storage_code(exc: StorageError, otherwise: ErrorCode) -> ErrorCode:
    return ErrorCode.CREDENTIALS if exc.user_fault else otherwise


def run_training(
    run_id: str, ctx: WorkerContext, progress: Callable[[dict], None] | None = None
) -> str:
    """Claim, stage, execute, store. Returns the end state, or `skipped` for a message
    whose run is gone, already claimed or already ended (a duplicate is never run twice)."""
    if ctx.nodes.drain_deadline(ctx.name) is not None and ctx.requeue is not None:
        pending = ctx.runs.get(run_id)
        if pending is not None and pending.state is RunState.PENDING:
            time.sleep(1.0)  # its consumer is being cancelled: do not spin on the message
            ctx.requeue(run_id, pending.resource)  # draining: take no new run
            log.info("%s: handed back to its queue, %s is draining", run_id, ctx.name)
            return "requeued"
    run = ctx.runs.claim(run_id, ctx.name, lambda count: list(ctx.gpus.for_run(count)))
    if run is None:
        log.info("%s: dropped, not PENDING any more (claimed, ended or deleted)", run_id)
        return "skipped"
    dirs = RunDirs(ctx.settings.work_dir / run_id)
    ctx.nodes.set_running(ctx.name, run_id)
    supervisor = RunSupervisor(
        ctx.runs, ctx.nodes, run_id, ctx.name, run.attempt, ctx.settings.lease_refresh_seconds
    )
    supervisor.start()
    try:
        _run_claimed(_Run(run, ctx, dirs, progress), supervisor)
    except RunEnded:
        pass
    except (LostClaim, RunNotFound) as exc:
        log.warning("%s: stopped here, the run is no longer this worker's (%s)", run_id, exc)
        return "lost"
    except Exception as exc:
        log.exception("%s: worker error", run_id)
        try:
            ctx.runs.transition(
                run_id,
                RunState.FAILED,
                f"worker error: {type(exc).__name__}: {exc}",
                ErrorCode.WORKER_ERROR,
                attempt=run.attempt,
            )
        except Exception:
            log.exception("%s: could not record the failure", run_id)
    finally:
        supervisor.finish()
        try:
            ctx.nodes.set_running(ctx.name, None)
        except Exception:
            log.warning("%s: could not mark %s idle", run_id, ctx.name)
        try:
            LiveLog(ctx.runs.redis, run_id).close(ctx.settings.retention_seconds)
        except Exception:
            log.warning("%s: could not trim its live log", run_id)
        if not ctx.settings.keep_workdir:
            shutil.rmtree(dirs.root, ignore_errors=True)
        else:
            try:
                reclaim(dirs, None)  # kept: root's only (0700), no later run can read it
            except OSError as exc:
                log.warning("%s: could not take back its kept directory: %s", run_id, exc)
    final = ctx.runs.get(run_id)
    if final is None or (final.state.terminal and final.artifact):
        ctx.artifacts.delete(run.artifact)  # a copy is in the results bucket now
    return final.state.value if final else "deleted"


def _run_claimed(job: _Run, supervisor: RunSupervisor) -> None:
    """The pipeline, from staging to the end state (unstored results are moved aside)."""
    ctx, run, dirs, settings = job.ctx, job.run, job.dirs, job.ctx.settings
    stop = supervisor.stop
    prepare_work_dir(settings.work_dir)
    dirs.create()
    dirs.log_file.touch()
    try:
        manifest = Manifest.from_dict(run.manifest).with_connections(ctx.box.open(run.credentials))
    except CredentialsError as exc:
        raise job.fail(
            ErrorCode.WORKER_ERROR, f"cannot read the run's credentials: {exc}"
        ) from None
    data, results = manifest.training_data, manifest.training_results
    stores = {}
    for label, store in (("data store", data), ("results store", results)):
        try:
            stores[label] = open_store(store, settings.local_store_root)
            stores[label].check_bucket(store.bucket)
        except StorageError as exc:
            raise job.fail(_storage_code(exc, ErrorCode.DATA_STAGING), f"{label}: {exc}") from None
    data_store, results_store = stores["data store"], stores["results store"]
    model_zip = dirs.root / "model.zip"

    execution: Execution | None = None
    chunks_uploaded: list[str] = []
    # The model zip comes from the artifact store while the data comes from the data store:
    # both at once. A model that cannot be staged stops the data transfer early.
    with ThreadPoolExecutor(1, thread_name_prefix="model-staging") as pool:
        model_job = pool.submit(
            stage_model, ctx.artifacts, run.artifact, model_zip, dirs.model, settings
        )

        def should_stop() -> bool:
            return stop.is_set() or (model_job.done() and model_job.exception() is not None)

        began, began_cpu = time.monotonic(), time.process_time()
        job.note(f"data: {data_store.description}, bucket {data.bucket!r}", LOAD_LOG)
        data_error: StorageError | None = None
        try:
            reporter = ProgressReporter(
                ctx.runs, run.id, run.attempt, TransferProgress("downloading"), job.tell
            )
            with reporter as progress:
                staged = stage_data(data_store, data, dirs.data, should_stop, progress)
        except StorageError as exc:
            data_error = exc
        took, took_cpu = time.monotonic() - began, time.process_time() - began_cpu
        try:
            unzipped = model_job.result()
        except (ModelZipError, StorageError, OSError) as exc:
            job.note(f"model staging failed: {exc}", LOAD_LOG)
            raise job.fail(ErrorCode.MODEL_STAGING, f"model staging: {exc}") from None
    job.note(
        f"model: {unzipped.files} files, {unzipped.uncompressed_bytes} bytes into MODEL_DIR",
        LOAD_LOG,
    )
    if data_error is not None:
        job.note(f"data staging failed: {data_error}", LOAD_LOG)
        code = _storage_code(data_error, ErrorCode.DATA_STAGING)
        raise job.fail(code, f"data staging: {data_error}") from None
    job.note(
        f"data: {staged.objects} objects, {staged.bytes} bytes in {took:.2f} s "
        f"({staged.bytes / max(took, 1e-6) / 1e6:.1f} MB/s)",
        LOAD_LOG,
    )
    job.tell(
        run_state=RunState.DOWNLOADING.value,
        staged_bytes=staged.bytes,
        staged_objects=staged.objects,
    )
    usage: dict = {
        "staged_bytes": staged.bytes,
        "staged_objects": staged.objects,
        "staging_seconds": round(took, 3),
        # the worker process's CPU meanwhile (the transfer's threads, the model's unzip)
        "staging_cpu_seconds": round(took_cpu, 3),
    }

    # A cancel flagged while staging stops the run here, before its command ever starts,
    # even if the supervisor has not polled it yet.
    try:
        if not stop.is_set() and (by := ctx.runs.cancel_requested(run.id)):
            stop.set(StopReason.CANCEL, f"cancelled by {by}")
    except redis.RedisError:
        pass  # the supervisor keeps polling for it

    limits = run_limits(settings, run.resource)
    if not stop.is_set():
        try:
            user = run_user(settings.run_as)
            if user is not None:
                check_reachable(user, settings.work_dir)
        except RunUserError as exc:
            raise job.fail(ErrorCode.WORKER_ERROR, f"{ctx.name}: {exc}") from None
        env = run_environment(settings, run.id, dirs, tuple(run.gpus))
        if manifest.expose_credentials:  # the user asked for them (execution.expose_credentials)
            env.update(credential_environment(data))
        who = f"user {user.name!r}" if user else "the worker's own user (not root)"
        limit_text = ", ".join(f"{limit.what} {limit.shown()}" for limit in limits)
        job.note(f"command runs as {who}; limits: {limit_text}", LOAD_LOG)
        alone = None
        if user is not None:
            alone = hold_alone(user)
            hand_over(dirs, (TRAINING_LOG, LOAD_LOG, STORE_LOG), user)
        job.write(
            RunState.PROCESSING,
            f"staged {staged.objects} objects ({staged.bytes} bytes); running on {ctx.name} "
            f"with CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES'] or '(none)'}",
        )
        supervisor.start_clock(_time_limit(run, settings))
        live = LiveLog(ctx.runs.redis, run.id, settings.live_log_max_entries)
        patiently(live.reset, settings.redis_outage_seconds, f"{run.id} live log")
        streamer = LiveStreamer(live)
        chunks = ChunkUploader(
            dirs.log_file,
            lambda path, key: results_store.put_file(path, results.bucket, f"{run.id}/{key}"),
            LOG_CHUNKS_PREFIX,
            settings.log_chunk_seconds,
            settings.log_chunk_bytes,
        )
        sampler = UsageSampler(tuple(run.gpus))
        streamer.start()
        chunks.start()
        try:
            execution = execute(
                expand_command(run.command, env),
                env,
                dirs.model,
                dirs.log_file,
                stop,
                settings.cancel_grace_seconds,
                on_start=lambda pid: ctx.runs.update(run.id, run.attempt, process_id=pid),
                live=streamer,
                usage=sampler,
                user=user,
                limits=limits,
            )
        finally:
            streamer.close()
            chunks.close()
            sampler.close()
            # Root's again, the run user's leftovers ended, before anything is read back.
            # Its leftovers are ended by uid only when no other run uses the same user.
            removed = reclaim(dirs, user if alone is not None else None)
            if alone is not None:
                os.close(alone)
            if removed:
                job.note(f"removed links and pipes the run left: {', '.join(removed)}", STORE_LOG)
        chunks_uploaded.extend(chunks.uploaded)
        usage.update(sampler.summary())
        if streamer.dropped_lines:
            usage["live_log_dropped_lines"] = streamer.dropped_lines
        if execution.stopped:
            job.note(
                f"stopped: {execution.stopped.detail} (SIGTERM, then SIGKILL after "
                f"{settings.cancel_grace_seconds:g} s); all its processes ended in "
                f"{execution.stop_seconds:.2f} s"
            )
        # Before the next run: nothing of this one may still hold its GPUs.
        if not gpus_released(tuple(run.gpus), set(execution.pids)):
            log.error("%s: its GPUs are still held by its processes", run.id)
    request = execution.stopped if execution else stop.request
    if request is not None and request.reason is StopReason.LOST:
        raise LostClaim(run.id, run.state, RunState.STORING, "claim lost")
    if execution is None:
        job.note(f"stopped before the command started: {request.detail}")

    exit_code = execution.exit_code if execution else None
    job.write(
        RunState.STORING,
        "storing results" if exit_code is None else f"command exited with code {exit_code}",
        exit_code=exit_code,
        usage=usage,
    )
    where = f"{results.type.value} {results.bucket}/{run.id}/"
    job.note(
        f"storing RESULT_DIR and the logs in {results_store.description}, "
        f"bucket {results.bucket!r}, under {run.id}/",
        STORE_LOG,
    )
    began = time.monotonic()
    try:
        reporter = ProgressReporter(
            ctx.runs, run.id, run.attempt, TransferProgress("storing"), job.tell
        )
        with reporter as progress:
            stored = _store_with_retries(
                results_store, results.bucket, run.id, dirs, model_zip, progress
            )
        took = time.monotonic() - began
        job.note(
            f"stored {stored.objects} objects, {stored.bytes} bytes in {took:.2f} s", STORE_LOG
        )
        # This log's own last line, and the chunks the whole log now replaces.
        results_store.put_file(
            dirs.log / STORE_LOG, results.bucket, f"{run.id}/{LEARNER}/{STORE_LOG}"
        )
        for key in chunks_uploaded:
            results_store.delete(results.bucket, f"{run.id}/{key}")
        usage.update(
            stored_bytes=stored.bytes, stored_objects=stored.objects, storing_seconds=round(took, 3)
        )
        ctx.runs.update(run.id, run.attempt, usage=json.dumps(usage, sort_keys=True))
        stats.add_transfers(ctx.runs.redis, usage)
    except StorageError as exc:
        job.note(f"storing failed: {exc}", STORE_LOG)
        if exc.user_fault:
            raise job.fail(ErrorCode.CREDENTIALS, f"storing results: {exc}") from None
        kept = settings.work_dir / "unstored" / run.id
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(dirs.root), kept)
        raise job.fail(
            ErrorCode.RESULT_UPLOAD,
            f"storing results in {where} failed after {STORE_ATTEMPTS} attempts: {exc}; "
            f"results kept on {ctx.name} at {kept}",
        ) from None
    summary = f"stored {stored.objects} objects ({stored.bytes} bytes) in {where}"

    # A cancel that arrives while storing still ends the run HALTED: the user asked.
    if request is None and stop.request is not None and stop.request.reason is StopReason.CANCEL:
        request = stop.request
    if request is not None:
        _end_stopped(job, request, summary)
    elif exit_code == 0:
        job.write(RunState.COMPLETED, summary)
    else:
        hit = limit_hit(limits, tail(dirs.log_file, lines=30, max_chars=8000))
        why = f": {describe_hit(hit)}" if hit else ""
        raise job.fail(
            ErrorCode.COMMAND_FAILED,
            f"command exited with code {exit_code}{why}; log in "
            f"{where}learner-1/training-log.txt; last lines:\n{tail(dirs.log_file)}",
        )


def _end_stopped(job: _Run, request: StopRequest, summary: str) -> None:
    ctx, run = job.ctx, job.run
    if request.reason is StopReason.CANCEL:
        job.write(RunState.HALTED, f"{request.detail}; {summary}")
    elif request.reason is StopReason.TIMEOUT:
        raise job.fail(ErrorCode.TIME_LIMIT, f"{request.detail}; {summary}")
    elif request.reason is StopReason.DRAIN:
        if run.attempt <= ctx.settings.run_retries and ctx.requeue is not None:
            job.write(
                RunState.PENDING,
                f"handed back to the queue: {ctx.name} shut down "
                f"(attempt {run.attempt} of {ctx.settings.run_retries + 1})",
            )
            ctx.requeue(run.id, run.resource)
        else:
            raise job.fail(ErrorCode.WORKER_SHUTDOWN, f"{request.detail}: {ctx.name}; {summary}")


def _time_limit(run: Run, settings: Settings) -> float:
    limits = [t for t in (run.timeout_seconds, settings.max_run_seconds) if t and t > 0]
    return min(limits) if limits else 0.0


def _store_with_retries(store, bucket, run_id, dirs: RunDirs, model_zip, progress=None):
    delay = 1.0
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return store_results(store, bucket, run_id, dirs.result, model_zip, dirs.log, progress)
        except StorageError as exc:
            if exc.user_fault or attempt == STORE_ATTEMPTS:
                raise
            log.warning("%s: storing failed (%s); retrying in %.0f s", run_id, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
