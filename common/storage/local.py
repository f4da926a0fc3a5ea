"""A store on a directory of the node: `<root>/<bucket>/<key>`. The embedded default."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from common.storage.base import (
    STREAM_CHUNK,
    ListedDownloads,
    ObjectInfo,
    StorageError,
    TransferProgress,
    TransferStats,
    files_to_upload,
)

CHUNK = 1024 * 1024


def resolve_local_root(store_root: Path, path: str) -> Path:
    """A manifest's `connection.path`, relative to the service's local store root.

    Paths outside the root are refused, so a manifest cannot read or write the node at large.
    """
    root = Path(store_root).resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise StorageError(
            f"local path {path!r} lies outside the local store root", user_fault=True
        )
    return target


class LocalStore(ListedDownloads):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.description = f"local store {self.root}"

    def _bucket(self, bucket: str, create: bool = False) -> Path:
        path = self.root / bucket
        if create:
            path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise StorageError(
                f"{self.description}: bucket {bucket!r} does not exist", user_fault=True
            )
        return path

    def _object(self, bucket: str, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or ".." in parts or key.startswith("/"):
            raise StorageError(f"{self.description}: invalid object key {key!r}", user_fault=True)
        return self._bucket(bucket) / Path(*parts)

    def check_bucket(self, bucket: str) -> None:
        self._bucket(bucket)

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        base = self._bucket(bucket)
        out = []
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._object(bucket, folder) if folder else base
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                path = Path(dirpath) / name
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    out.append(ObjectInfo(key, path.stat().st_size))
        return sorted(out, key=lambda o: o.key)

    def download_objects(
        self,
        bucket: str,
        objects: list[ObjectInfo],
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> TransferStats:
        progress = progress or TransferProgress("downloading")
        stats = TransferStats()
        for obj in objects:
            if should_stop is not None and should_stop():
                break
            try:
                size = self._copy(self._object(bucket, obj.key), dest / obj.key, should_stop)
            except OSError as exc:
                raise StorageError(
                    f"{self.description}: cannot read {bucket}/{obj.key}: {exc.strerror or exc}"
                ) from None
            stats.add(size)
            progress.add_bytes(size)
            progress.object_done()
        return stats

    @staticmethod
    def _copy(source: Path, dest: Path, should_stop: Callable[[], bool] | None = None) -> int:
        """Copy in chunks, checking `should_stop` between them; returns the bytes copied."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        copied = 0
        with open(source, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                copied += len(chunk)
                if should_stop is not None and should_stop():
                    break
        return copied

    def upload_dir(
        self, src: Path, bucket: str, prefix: str, progress: TransferProgress | None = None
    ) -> TransferStats:
        stats = TransferStats()
        self._bucket(bucket)
        items = files_to_upload(src, prefix)
        progress = progress or TransferProgress("storing")
        progress.expect(len(items), sum(p.stat().st_size for p, _ in items))
        for path, key in items:
            self.put_file(path, bucket, key)
            size = path.stat().st_size
            stats.add(size)
            progress.add_bytes(size)
            progress.object_done()
        return stats

    def put_file(self, src: Path, bucket: str, key: str) -> None:
        self._put(bucket, key, lambda partial: shutil.copyfile(src, partial))

    def put_bytes(self, data: bytes, bucket: str, key: str) -> None:
        self._put(bucket, key, lambda partial: partial.write_bytes(data))

    def _put(self, bucket: str, key: str, write: Callable[[Path], object]) -> None:
        """`write(partial)` beside the object, then renamed: a reader sees all of it or none."""
        target = self._object(bucket, key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            write(partial)
            os.replace(partial, target)
        except OSError as exc:
            raise StorageError(
                f"{self.description}: cannot write {bucket}/{key}: {exc.strerror or exc}"
            ) from None

    def get_file(self, bucket: str, key: str, dest: Path) -> None:
        source = self._object(bucket, key)
        if not source.is_file():
            raise StorageError(
                f"{self.description}: {bucket}/{key} does not exist", user_fault=True
            )
        self._copy(source, dest)

    def stream(self, bucket: str, key: str) -> tuple[int, Iterator[bytes]]:
        source = self._object(bucket, key)
        try:
            f = open(source, "rb")  # noqa: SIM115  (closed by the generator)
            size = os.fstat(f.fileno()).st_size
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StorageError(
                f"{self.description}: {bucket}/{key} does not exist", user_fault=True
            ) from None
        except OSError as exc:
            raise StorageError(
                f"{self.description}: cannot read {bucket}/{key}: {exc.strerror or exc}"
            ) from None

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(STREAM_CHUNK):
                    yield chunk

        return size, chunks()

    def delete(self, bucket: str, key: str) -> None:
        target = self._object(bucket, key)
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{self.description}: cannot delete {bucket}/{key}: {exc.strerror or exc}"
            ) from None
        parent = target.parent
        bucket_dir = self._bucket(bucket)
        while parent != bucket_dir:  # drop folders the deletion left empty
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
