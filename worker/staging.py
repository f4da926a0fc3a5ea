"""DOWNLOADING: the model zip into MODEL_DIR, every object of the data bucket into DATA_DIR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.artifacts import ArtifactStore
from common.manifest import DataStore
from common.modelzip import ZipLimits, ZipSummary, extract_zip
from common.settings import Settings
from common.storage import ObjectStore, TransferStats
from common.storage.base import TransferProgress


def zip_limits(settings: Settings) -> ZipLimits:
    return ZipLimits(
        settings.zip_max_entries, settings.zip_max_uncompressed_bytes, settings.zip_max_ratio
    )


def stage_model(
    artifacts: ArtifactStore, artifact: str, model_zip: Path, model_dir: Path, settings: Settings
) -> ZipSummary:
    """Fetches the run's zip from the artifact store to `model_zip` and unpacks it."""
    artifacts.fetch(artifact, model_zip)
    return extract_zip(model_zip, model_dir, zip_limits(settings))


def stage_data(
    store: ObjectStore,
    data: DataStore,
    data_dir: Path,
    should_stop: Callable[[], bool],
    progress: TransferProgress | None = None,
) -> TransferStats:
    return store.download_all(data.bucket, data_dir, should_stop, progress)
