"""Where submitted model zips wait for a worker: a bucket every API process and worker can
reach. A local folder on a single machine (the embedded default), or an S3 or Swift bucket
when API and workers run on different machines (DLAAS_ARTIFACT_STORE)."""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings
from common.storage import LocalStore, ObjectStore, StorageError
from common.storage.s3 import S3Store
from common.storage.swift import SwiftStore


class ArtifactStore:
    def __init__(self, store: ObjectStore, bucket: str):
        self.store = store
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        kind = settings.artifact_store
        if kind == "local":
            root = Path(settings.artifact_dir)
            (root / settings.artifact_bucket).mkdir(parents=True, exist_ok=True)
            return cls(LocalStore(root), settings.artifact_bucket)
        if kind == "s3":
            store = S3Store(
                settings.artifact_endpoint, settings.artifact_user, settings.artifact_key
            )
        else:
            store = SwiftStore(
                {
                    "auth_url": settings.artifact_endpoint,
                    "user_name": settings.artifact_user,
                    "password": settings.artifact_key,
                }
            )
        return cls(store, settings.artifact_bucket)

    def put(self, run_id: str, data: bytes) -> str:
        """Store the zip; returns the reference kept on the run (`<run-id>.zip`: no folder
        per run in a local store; runs stored as `<run-id>/model.zip` keep theirs)."""
        ref = f"{run_id}.zip"
        self.store.put_bytes(data, self.bucket, ref)
        return ref

    def fetch(self, ref: str, dest: Path) -> Path:
        self.store.get_file(self.bucket, ref, dest)
        return dest

    def exists(self, ref: str) -> bool:
        return any(o.key == ref for o in self.store.list(self.bucket, ref))

    def delete(self, ref: str) -> None:
        try:
            self.store.delete(self.bucket, ref)
        except StorageError:
            pass  # a leftover zip is harmless; the run's record says where it was
