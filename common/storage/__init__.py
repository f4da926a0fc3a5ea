"""Object storage behind one interface: local directories now; S3 and Swift plug in here.

A store moves whole buckets and single objects; callers never see the backend's types.
"""

from __future__ import annotations

from pathlib import Path

from common.manifest import DataStore, StoreType
from common.storage.base import ObjectInfo, ObjectStore, StorageError, TransferStats
from common.storage.local import LocalStore, resolve_local_root

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "StorageError",
    "TransferStats",
    "LocalStore",
    "open_store",
    "resolve_local_root",
]


def open_store(store: DataStore, local_store_root: Path) -> ObjectStore:
    """The store a manifest's data store names, with its (unsealed) connection."""
    if store.type is StoreType.LOCAL:
        return LocalStore(resolve_local_root(local_store_root, store.connection["path"]))
    # S3 (boto3) and Swift (python-swiftclient) arrive with the object-storage issue;
    # the API refuses such manifests until DLAAS_STORE_TYPES enables them.
    raise StorageError(
        f"{store.type.value} stores are not available on this worker", user_fault=False
    )
