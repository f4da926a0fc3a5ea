"""STORING: RESULT_DIR, the submitted zip and the logs into `<bucket>/<run-id>/`, retried; the
log chunks the whole log replaces are removed. Results that could not be stored are kept on
the node, and the run says where."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from common import stats
from common.layout import (
    EMETRICS_FILE,
    RUN_LOGS,
    STORE_LOG,
    SUBMITTED_CODE_KEY,
    learner_key,
    run_key,
)
from common.states import ErrorCode, RunState
from common.storage import ObjectStore, StorageError, TransferStats
from common.storage.base import TransferProgress
from worker.attempt import Attempt, RunFailed
from worker.pipeline import Phase
from worker.rundirs import RunDirs

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 3


class Store(Phase):
    name = "store"

    def run(self, attempt: Attempt) -> None:
        attempt.check_claim()
        if attempt.execution is None and attempt.failure is not None:
            attempt.note(f"the command did not start: {attempt.failure.message}")
        elif attempt.execution is None:
            attempt.note(f"stopped before the command started: {attempt.stop.request.detail}")
        exit_code = attempt.execution.exit_code if attempt.execution else None
        attempt.write(
            RunState.STORING,
            "storing results" if exit_code is None else f"command exited with code {exit_code}",
            exit_code=exit_code,
            usage=attempt.usage,
        )
        store, bucket = attempt.results_store, attempt.manifest.training_results.bucket
        attempt.note(
            f"storing RESULT_DIR and the logs in {store.description}, "
            f"bucket {bucket!r}, under {attempt.id}/",
            STORE_LOG,
        )
        began = time.monotonic()
        try:
            stored = _store_with_retries(attempt)
            took = time.monotonic() - began
            attempt.note(
                f"stored {stored.objects} objects, {stored.bytes} bytes in {took:.2f} s", STORE_LOG
            )
            # This log's own last line, and the chunks the whole log now replaces.
            key = run_key(attempt.id, learner_key(STORE_LOG))
            store.put_file(attempt.dirs.log / STORE_LOG, bucket, key)
            for chunk in attempt.uploaded_chunks:
                store.delete(bucket, run_key(attempt.id, chunk))
        except StorageError as exc:
            raise _not_stored(attempt, exc) from None
        attempt.usage.update(
            stored_bytes=stored.bytes, stored_objects=stored.objects, storing_seconds=round(took, 3)
        )
        attempt.update(usage=attempt.usage)
        attempt.patiently(
            lambda: stats.add_transfers(attempt.ctx.runs.redis, attempt.usage),
            f"{attempt.id}: transfer totals",
        )
        attempt.stored_summary = (
            f"stored {stored.objects} objects ({stored.bytes} bytes) in {attempt.results_where}"
        )


def _not_stored(attempt: Attempt, exc: StorageError) -> RunFailed:
    attempt.note(f"storing failed: {exc}", STORE_LOG)
    if exc.user_fault:
        return RunFailed(ErrorCode.CREDENTIALS, f"storing results: {exc}")
    kept = keep_unstored(attempt.dirs, attempt.settings.work_dir)
    attempt.update(kept_results={"node": attempt.ctx.name, "path": str(kept), "state": "kept"})
    return RunFailed(
        ErrorCode.RESULT_UPLOAD,
        f"storing results in {attempt.results_where} failed after {STORE_ATTEMPTS} attempts: "
        f"{exc}; results kept on {attempt.ctx.name} at {kept} (`dlaas store training-runs "
        f"{attempt.id}` stores them again)",
    )


def keep_unstored(dirs: RunDirs, work_dir: Path) -> Path:
    """The run's folder moved to `<work dir>/unstored/<run-id>`, where the run's next
    attempt would not remove it and `dlaas store` finds it; without DATA_DIR (its input,
    in the data bucket still, and links that would pin the node's data cache)."""
    kept = unstored_dir(work_dir, dirs.root.name)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dirs.data, ignore_errors=True)
    shutil.move(str(dirs.root), kept)
    return kept


def unstored_root(work_dir: Path) -> Path:
    return work_dir / "unstored"


def unstored_dir(work_dir: Path, run_id: str) -> Path:
    return unstored_root(work_dir) / run_id


def _store_with_retries(attempt: Attempt):
    store, bucket, dirs = (
        attempt.results_store,
        attempt.manifest.training_results.bucket,
        attempt.dirs,
    )
    delay = 1.0
    for tries in range(1, STORE_ATTEMPTS + 1):
        try:
            return store_results(
                store,
                bucket,
                attempt.id,
                dirs.result,
                attempt.model_zip,
                dirs.log,
                attempt.transfer,
                attempt.event_files,
            )
        except StorageError as exc:
            if exc.user_fault or tries == STORE_ATTEMPTS:
                raise
            log.warning("%s: storing failed (%s); retrying in %.0f s", attempt.id, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def store_results(
    store: ObjectStore,
    bucket: str,
    run_id: str,
    result_dir: Path,
    model_zip: Path,
    log_dir: Path,
    progress: TransferProgress | None = None,
    event_files: Sequence[tuple[Path, str]] = (),
) -> TransferStats:
    """RESULT_DIR under `<run-id>/`, the zip and the run's logs where common/layout.py says,
    and the TensorBoard `event_files` at their keys in the learner's folder."""
    stats = store.upload_dir(result_dir, bucket, run_id, progress)
    files = [(model_zip, SUBMITTED_CODE_KEY)]
    files += [(log_dir / name, learner_key(name)) for name in (*RUN_LOGS, EMETRICS_FILE)]
    files += [(path, learner_key(key)) for path, key in event_files]
    for src, key in files:
        if src.exists():
            store.put_file(src, bucket, run_key(run_id, key))
            stats.add(src.stat().st_size)
    return stats
