"""DOWNLOADING: the model zip into MODEL_DIR (then the run's environment, from its
requirements.txt) while the data bucket comes into DATA_DIR, all at once; what moved goes
into the load log and the run's usage."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import redis

from common.artifacts import ArtifactStore
from common.layout import ENVIRONMENT_LOG, LOAD_LOG
from common.modelzip import ModelZipError, ZipLimits, ZipSummary, extract_zip
from common.settings import Settings
from common.states import ErrorCode, RunState
from common.storage import StorageError
from worker.attempt import Attempt, RunFailed
from worker.datacache import DataCache, Staged
from worker.keptthreads import kept_pool
from worker.phases.environment import joined, prepare_environment
from worker.phases.open_stores import storage_code
from worker.pipeline import Phase
from worker.supervisor import StopReason


def stage_model(
    artifacts: ArtifactStore, artifact: str, model_zip: Path, model_dir: Path, settings: Settings
) -> ZipSummary:
    """The run's zip from the artifact store to `model_zip`, unpacked into MODEL_DIR within
    the service's archive limits."""
    artifacts.fetch(artifact, model_zip)
    limits = ZipLimits.from_settings(settings)
    return extract_zip(model_zip, model_dir, limits)


class Stage(Phase):
    name = "stage"

    def run(self, attempt: Attempt) -> None:
        ctx, run = attempt.ctx, attempt.run
        # One job on one kept thread: the model, then (prepare_environment reads its
        # requirements.txt) its environment, while the data comes in this thread.
        model_job: futures.Future = futures.Future()
        abandon = threading.Event()

        def model_then_environment():
            model_job.set_running_or_notify_cancel()
            try:
                model_job.set_result(
                    stage_model(
                        ctx.artifacts,
                        run.artifact,
                        attempt.model_zip,
                        attempt.dirs.model,
                        ctx.settings,
                    )
                )
            except BaseException as exc:  # whatever it is, the run's thread hears of it
                model_job.set_exception(exc)
            return prepare_environment(attempt, model_job, abandon)

        env_job = kept_pool("model-staging").submit(model_then_environment)
        try:
            data_error, staged, took, took_cpu = _stage_data_beside(attempt, model_job, abandon)
            try:
                unzipped = model_job.result()
            except (ModelZipError, StorageError, OSError) as exc:
                attempt.note(f"model staging failed: {exc}", LOAD_LOG)
                raise RunFailed(ErrorCode.MODEL_STAGING, f"model staging: {exc}") from None
            if data_error is None and not env_job.done():
                waiting = f"data staged; building the environment ({attempt.run_framework})"
                attempt.note(f"{waiting}: see {ENVIRONMENT_LOG}", LOAD_LOG)
                attempt.tell(run_state=RunState.DOWNLOADING.value, environment="building")
                attempt.update(status_message=waiting)  # what `show` says meanwhile
        except BaseException:
            abandon.set()
            raise
        finally:
            futures.wait((env_job,))  # nothing of the run left running
        attempt.note(
            f"model: {unzipped.files} files, {unzipped.uncompressed_bytes} bytes into MODEL_DIR",
            LOAD_LOG,
        )
        if data_error is not None:
            attempt.note(f"data staging failed: {data_error}", LOAD_LOG)
            code = storage_code(data_error, ErrorCode.DATA_STAGING)
            raise RunFailed(code, f"data staging: {data_error}")
        _record(attempt, staged, took, took_cpu)
        joined(attempt, env_job)
        _notice_cancel(attempt)


def _stage_data_beside(attempt: Attempt, model_job: futures.Future, abandon: threading.Event):
    """The data while the model and its environment are prepared beside it: (error, what was
    staged, seconds, CPU seconds). A data error or a stop abandons the environment."""

    def should_stop() -> bool:  # a model that cannot be staged stops the data early
        failed = model_job.done() and model_job.exception() is not None
        return attempt.stop.is_set() or failed

    began, began_cpu = time.monotonic(), time.process_time()
    data_error, staged = _stage_data(attempt, should_stop)
    took, took_cpu = time.monotonic() - began, time.process_time() - began_cpu
    if data_error is not None or attempt.stop.is_set():
        abandon.set()
    return data_error, staged, took, took_cpu


def _stage_data(attempt: Attempt, should_stop) -> tuple[StorageError | None, Staged | None]:
    """The data bucket into DATA_DIR: through the node's data cache unless it is off."""
    data, settings = attempt.manifest.training_data, attempt.settings
    attempt.note(f"data: {attempt.data_store.description}, bucket {data.bucket!r}", LOAD_LOG)
    try:
        if settings.data_cache_max_bytes <= 0:
            fetched = attempt.data_store.download_all(
                data.bucket, attempt.dirs.data, should_stop, attempt.transfer
            )
            return None, Staged(fetched=fetched)
        cache = DataCache(settings.data_cache_dir, settings.data_cache_max_bytes)
        staged = cache.stage(
            attempt.data_store, data.bucket, attempt.dirs.data, should_stop, attempt.transfer
        )
        if staged.warning:
            attempt.note(f"warning: {staged.warning}", LOAD_LOG)
        count_cache(attempt, staged)
        return None, staged
    except StorageError as exc:
        return exc, None


def count_cache(attempt: Attempt, staged: Staged) -> None:
    """The node's cache figures for /metrics (never fails the run)."""
    try:
        attempt.ctx.nodes.count_cache(
            attempt.ctx.name,
            hits=staged.cached.objects,
            hit_bytes=staged.cached.bytes,
            misses=staged.fetched.objects,
            miss_bytes=staged.fetched.bytes,
            evictions=staged.evicted,
        )
    except redis.RedisError as exc:
        attempt.note(f"cache figures not counted: {exc}", LOAD_LOG)


def _record(attempt: Attempt, data: Staged, took: float, took_cpu: float) -> None:
    """What staging moved: into the load log, a progress event and the run's usage."""
    staged = data.total
    rate = staged.bytes / max(took, 1e-6) / 1e6
    attempt.note(
        f"data: {staged.objects} objects, {staged.bytes} bytes in {took:.2f} s ({rate:.1f} MB/s)"
        f"; from the node's cache {data.cached.objects} objects ({data.cached.bytes} bytes), "
        f"from the store {data.fetched.objects} ({data.fetched.bytes} bytes)",
        LOAD_LOG,
    )
    attempt.tell(
        run_state=RunState.DOWNLOADING.value,
        staged_bytes=staged.bytes,
        staged_objects=staged.objects,
    )
    attempt.usage.update(
        staged_bytes=staged.bytes,
        staged_objects=staged.objects,
        cached_objects=data.cached.objects,
        cached_bytes=data.cached.bytes,
        fetched_objects=data.fetched.objects,
        fetched_bytes=data.fetched.bytes,
        staging_seconds=round(took, 3),
        # the worker process's CPU meanwhile (the transfer's threads, the model's unzip)
        staging_cpu_seconds=round(took_cpu, 3),
    )


def _notice_cancel(attempt: Attempt) -> None:
    """A cancel flagged while staging stops the run here, before its command ever starts,
    even if the supervisor has not polled it yet."""
    try:
        if not attempt.stop.is_set() and (detail := attempt.ctx.runs.cancel_detail(attempt.id)):
            attempt.stop.set(StopReason.CANCEL, detail)
    except redis.RedisError:
        pass  # the supervisor keeps polling for it
