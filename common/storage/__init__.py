"""Object storage behind one interface: local directories, S3 (boto3), Swift (swiftclient).

A store moves whole buckets and single objects; callers never see the backend's types.
"""

from __future__ import annotations

from pathlib import Path

from common.manifest import DataStore, StoreType
from common.storage.base import ObjectInfo, ObjectStore, StorageError, TransferStats
from common.storage.local import LocalStore, resolve_local_root
from common.storage.s3 import S3Store
from common.storage.swift import SwiftStore

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
    conn = store.connection
    if store.type is StoreType.LOCAL:
        return LocalStore(resolve_local_root(local_store_root, conn["path"]))
    if store.type is StoreType.S3:
        return S3Store(
            conn["endpoint_url"],
            conn["aws_access_key_id"],
            conn["aws_secret_access_key"],
            conn.get("region") or conn.get("region_name", ""),
        )
    return SwiftStore(conn)
