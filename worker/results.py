"""STORING: RESULT_DIR, the submitted zip and the log into `<bucket>/<run-id>/`."""

from __future__ import annotations

from pathlib import Path

from common.layout import RUN_LOGS, SUBMITTED_CODE_KEY, learner_key, run_key
from common.storage import ObjectStore, TransferStats
from common.storage.base import TransferProgress


def store_results(
    store: ObjectStore,
    bucket: str,
    run_id: str,
    result_dir: Path,
    model_zip: Path,
    log_dir: Path,
    progress: TransferProgress | None = None,
) -> TransferStats:
    """RESULT_DIR under `<run-id>/`, the zip and the run's logs where common/layout.py says."""
    stats = store.upload_dir(result_dir, bucket, run_id, progress)
    files = [(model_zip, SUBMITTED_CODE_KEY)]
    files += [(log_dir / name, learner_key(name)) for name in RUN_LOGS]
    for src, key in files:
        if src.exists():
            store.put_file(src, bucket, run_key(run_id, key))
            stats.add(src.stat().st_size)
    return stats
