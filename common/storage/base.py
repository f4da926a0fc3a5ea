"""The storage interface every backend implements, and the error it raises."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

STREAM_CHUNK = 1 << 20  # what stream() yields at a time


class StorageError(RuntimeError):
    """A transfer problem. `user_fault` marks what the user can fix (credentials, bucket)."""

    def __init__(self, message: str, user_fault: bool = False):
        super().__init__(message)
        self.user_fault = user_fault


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None  # as the store's listing gives it, when it does


class TransferProgress:
    """Counts a transfer as it goes (objects and bytes, done and total), for `dlaas show`.
    Backends add to it from their transfer threads."""

    def __init__(self, phase: str):
        self.phase = phase
        self._lock = threading.Lock()
        self.objects_total = self.bytes_total = 0
        self.objects_done = self.bytes_done = 0
        self.started = time.monotonic()

    def expect(self, objects: int, size: int) -> None:
        with self._lock:
            self.objects_total += objects
            self.bytes_total += size

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_done += count

    def object_done(self) -> None:
        with self._lock:
            self.objects_done += 1

    def snapshot(self) -> dict:
        with self._lock:
            seconds = max(time.monotonic() - self.started, 1e-6)
            return {
                "phase": self.phase,
                "objects_done": self.objects_done,
                "objects_total": self.objects_total,
                "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total,
                "bytes_per_second": round(self.bytes_done / seconds),
            }


@dataclass
class TransferStats:
    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size

    def absorb(self, other: TransferStats) -> None:
        self.objects += other.objects
        self.bytes += other.bytes


class ObjectStore(Protocol):
    description: str

    def check_bucket(self, bucket: str) -> None:
        """Raise StorageError (user_fault) when the bucket cannot be reached or is missing."""
        ...

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """The bucket's objects (those whose key starts with `prefix`), sorted by key."""
        ...

    def download_all(
        self,
        bucket: str,
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        """Every object of the bucket under `dest`; stops early once `should_stop()`."""
        ...

    def download_objects(
        self,
        bucket: str,
        objects: list[ObjectInfo],
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        """These objects of the bucket (as its listing gave them) under `dest`, each at its
        key; `progress` is counted on, not told what to expect."""
        ...

    def upload_dir(
        self, src: Path, bucket: str, prefix: str, progress: TransferProgress | None = None
    ) -> TransferStats: ...

    def put_file(self, src: Path, bucket: str, key: str) -> None: ...

    def put_bytes(self, data: bytes, bucket: str, key: str) -> None:
        """One object from memory (a submitted zip): no file written first."""
        ...

    def get_file(self, bucket: str, key: str, dest: Path) -> None: ...

    def stream(self, bucket: str, key: str) -> tuple[int, Iterator[bytes]]:
        """One object's size and its bytes, in chunks of STREAM_CHUNK as they are read. A
        missing object raises StorageError (user_fault) here, before the first chunk."""
        ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove one object; a missing one is not an error."""
        ...


class ListedDownloads:
    """`download_all` as every backend does it: its listing, then `download_objects` of it."""

    def download_all(
        self,
        bucket: str,
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        objects, progress = plan_download(self, bucket, progress)
        return self.download_objects(bucket, objects, dest, should_stop, progress)


def plan_download(
    store: ObjectStore, bucket: str, progress: TransferProgress | None
) -> tuple[list[ObjectInfo], TransferProgress]:
    """How every backend's download_all opens: the bucket's listing, and the progress that
    expects all of it (a fresh one when the caller gave none)."""
    objects = store.list(bucket)
    progress = progress or TransferProgress("downloading")
    progress.expect(len(objects), sum(o.size for o in objects))
    return objects, progress


def files_to_upload(src: Path, prefix: str) -> list[tuple[Path, str]]:
    """(path, key) for every regular file under `src`: never a run's symlinks (they could
    point anywhere on the node) nor its pipes (reading one would block)."""
    items = []
    for dirpath, _dirs, files in os.walk(src):
        for name in sorted(files):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            items.append((path, f"{prefix.rstrip('/')}/{path.relative_to(src).as_posix()}"))
    return items


def target_inside(root: Path, key: str) -> Path:
    """Where object `key` lands under `root` (a resolved, fresh DATA_DIR), decided from the
    key's text alone: `a/./b` and `a//b` land on `a/b`, and a key that would climb out (`..`
    above the top, or a leading `/`) is the user's error. No lstat per path component: a
    bucket of many small objects is staged without one syscall walk each."""
    normal = os.path.normpath(key)
    if key.startswith("/") or normal in (".", "..") or normal.startswith("../"):
        raise StorageError(f"object key {key!r} would land outside DATA_DIR", user_fault=True)
    return root / normal
