"""STORING: RESULT_DIR, the submitted zip and the log into `<bucket>/<run-id>/`."""

from __future__ import annotations

from pathlib import Path

from common.storage import ObjectStore, TransferStats
from common.storage.base import TransferProgress

SUBMITTED_CODE_KEY = "_submitted_code/model.zip"
LEARNER = "learner-1"
TRAINING_LOG_KEY = f"{LEARNER}/training-log.txt"
# Copies of the log made while the run went on; removed once the whole log is stored.
LOG_CHUNKS_PREFIX = f"{LEARNER}/log-chunks/"


def store_results(
    store: ObjectStore,
    bucket: str,
    run_id: str,
    result_dir: Path,
    model_zip: Path,
    log_dir: Path,
    progress: TransferProgress | None = None,
) -> TransferStats:
    """RESULT_DIR under `<run-id>/`, the zip under `_submitted_code/`, and every log of the
    run (training-log.txt, load-data.log, store-results.log) under `learner-1/`."""
    stats = store.upload_dir(result_dir, bucket, run_id, progress)
    files = [(model_zip, SUBMITTED_CODE_KEY)]
    files += [(p, f"{LEARNER}/{p.name}") for p in sorted(log_dir.glob("*.txt"))]
    files += [(p, f"{LEARNER}/{p.name}") for p in sorted(log_dir.glob("*.log"))]
    for src, key in files:
        if src.exists():
            store.put_file(src, bucket, f"{run_id}/{key}")
            stats.add(src.stat().st_size)
    return stats
