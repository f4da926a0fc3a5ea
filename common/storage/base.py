"""The storage interface every backend implements, and the error it raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class StorageError(RuntimeError):
    """A transfer problem. `user_fault` marks what the user can fix (credentials, bucket)."""

    def __init__(self, message: str, user_fault: bool = False):
        super().__init__(message)
        self.user_fault = user_fault


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass
class TransferStats:
    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size


class ObjectStore(Protocol):
    description: str

    def check_bucket(self, bucket: str) -> None:
        """Raise StorageError (user_fault) when the bucket cannot be reached or is missing."""
        ...

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """The bucket's objects (those whose key starts with `prefix`), sorted by key."""
        ...

    def download_all(
        self, bucket: str, dest: Path, should_stop: Callable[[], bool] | None = None
    ) -> TransferStats:
        """Every object of the bucket under `dest`; stops early once `should_stop()`."""
        ...

    def upload_dir(self, src: Path, bucket: str, prefix: str) -> TransferStats: ...

    def put_file(self, src: Path, bucket: str, key: str) -> None: ...

    def get_file(self, bucket: str, key: str, dest: Path) -> None: ...

    def delete(self, bucket: str, key: str) -> None:
        """Remove one object; a missing one is not an error."""
        ...
