"""STORING: RESULT_DIR, the submitted zip and the log into `<bucket>/<run-id>/`."""

from __future__ import annotations

from pathlib import Path

from common.storage import ObjectStore, TransferStats

SUBMITTED_CODE_KEY = "_submitted_code/model.zip"
TRAINING_LOG_KEY = "learner-1/training-log.txt"


def store_results(
    store: ObjectStore, bucket: str, run_id: str, result_dir: Path, model_zip: Path, log_file: Path
) -> TransferStats:
    stats = store.upload_dir(result_dir, bucket, run_id)
    for src, key in ((model_zip, SUBMITTED_CODE_KEY), (log_file, TRAINING_LOG_KEY)):
        if src.exists():
            store.put_file(src, bucket, f"{run_id}/{key}")
            stats.add(src.stat().st_size)
    return stats
