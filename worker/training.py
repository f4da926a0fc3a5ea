"""One training run from claim to end state: the plain function the Celery task calls."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from common.artifacts import ArtifactStore
from common.crypto import CredentialBox, CredentialsError
from common.manifest import Manifest
from common.modelzip import ModelZipError
from common.run import Run
from common.runstore import RunNotFound, RunStore
from common.settings import Settings
from common.states import ErrorCode, RunState
from common.storage import StorageError, open_store
from worker.gpus import GpuSet
from worker.process import RunDirs, execute, expand_command, run_environment, tail
from worker.results import store_results
from worker.staging import stage_data, stage_model

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    runs: RunStore
    box: CredentialBox
    artifacts: ArtifactStore
    gpus: GpuSet
    name: str


class RunEnded(Exception):
    """The run reached an end state (FAILED) before its pipeline finished."""


def _fail(ctx: WorkerContext, run: Run, code: ErrorCode, message: str) -> RunEnded:
    ctx.runs.transition(run.id, RunState.FAILED, message, code)
    log.warning("%s failed (%s): %s", run.id, code.value, message)
    return RunEnded(message)


def _storage_code(exc: StorageError, otherwise: ErrorCode) -> ErrorCode:
    return ErrorCode.CREDENTIALS if exc.user_fault else otherwise


def run_training(run_id: str, ctx: WorkerContext) -> str:
    """Claim, stage, execute, store. Returns the end state, or `skipped` for a message
    whose run is gone, already claimed or already ended (a duplicate is never run twice)."""
    run = ctx.runs.claim(run_id, ctx.name, list(ctx.gpus.for_run(_gpu_count(ctx, run_id))))
    if run is None:
        log.info("%s: dropped, not PENDING any more (claimed, ended or deleted)", run_id)
        return "skipped"
    dirs = RunDirs(ctx.settings.work_dir / run_id)
    try:
        _run_claimed(run, ctx, dirs)
    except RunEnded:
        pass
    except RunNotFound:
        log.warning("%s: the run was deleted while it ran", run_id)
        return "deleted"
    except Exception as exc:
        log.exception("%s: worker error", run_id)
        try:
            ctx.runs.transition(
                run_id,
                RunState.FAILED,
                f"worker error: {type(exc).__name__}: {exc}",
                ErrorCode.WORKER_ERROR,
            )
        except Exception:
            log.exception("%s: could not record the failure", run_id)
    finally:
        if not ctx.settings.keep_workdir:
            shutil.rmtree(dirs.root, ignore_errors=True)
    final = ctx.runs.get(run_id)
    if final is not None and final.state.terminal and final.artifact:
        ctx.artifacts.delete(final.artifact)  # a copy is in the results bucket now
    return final.state.value if final else "deleted"


def _gpu_count(ctx: WorkerContext, run_id: str) -> int:
    run = ctx.runs.get(run_id)
    return run.gpu_count if run else 0


def _run_claimed(run: Run, ctx: WorkerContext, dirs: RunDirs) -> None:
    settings = ctx.settings
    dirs.create()
    try:
        manifest = Manifest.from_dict(run.manifest).with_connections(ctx.box.open(run.credentials))
    except CredentialsError as exc:
        raise _fail(
            ctx, run, ErrorCode.WORKER_ERROR, f"cannot read the run's credentials: {exc}"
        ) from None
    data, results = manifest.training_data, manifest.training_results
    stores = {}
    for label, store in (("data store", data), ("results store", results)):
        try:
            stores[label] = open_store(store, settings.local_store_root)
            stores[label].check_bucket(store.bucket)
        except StorageError as exc:
            code = _storage_code(exc, ErrorCode.DATA_STAGING)
            raise _fail(ctx, run, code, f"{label}: {exc}") from None
    data_store, results_store = stores["data store"], stores["results store"]

    model_zip = ctx.artifacts.path(run.artifact)
    try:
        stage_model(model_zip, dirs.model, settings)
    except (ModelZipError, OSError) as exc:
        raise _fail(ctx, run, ErrorCode.MODEL_STAGING, f"model staging: {exc}") from None
    try:
        staged = stage_data(data_store, data, dirs.data)
    except StorageError as exc:
        raise _fail(
            ctx, run, _storage_code(exc, ErrorCode.DATA_STAGING), f"data staging: {exc}"
        ) from None

    env = run_environment(settings, run.id, dirs, tuple(run.gpus))
    command = expand_command(run.command, env)
    ctx.runs.transition(
        run.id,
        RunState.PROCESSING,
        f"staged {staged.objects} objects ({staged.bytes} bytes); running on {ctx.name} "
        f"with CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES'] or '(none)'}",
    )
    exit_code = execute(command, env, dirs.model, dirs.log_file)

    ctx.runs.transition(
        run.id, RunState.STORING, f"command exited with code {exit_code}", exit_code=exit_code
    )
    try:
        stored = store_results(
            results_store, results.bucket, run.id, dirs.result, model_zip, dirs.log_file
        )
    except StorageError as exc:
        raise _fail(
            ctx, run, _storage_code(exc, ErrorCode.RESULT_UPLOAD), f"storing results: {exc}"
        ) from None
    where = f"{results.type.value} {results.bucket}/{run.id}/"
    if exit_code == 0:
        ctx.runs.transition(
            run.id,
            RunState.COMPLETED,
            f"stored {stored.objects} objects ({stored.bytes} bytes) in {where}",
        )
        return
    last = tail(dirs.log_file)
    raise _fail(
        ctx,
        run,
        ErrorCode.COMMAND_FAILED,
        f"command exited with code {exit_code}; log in {where}learner-1/training-log.txt; "
        f"last lines:\n{last}",
    ) from None
