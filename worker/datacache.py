"""The node's data cache: what staging downloads is kept, by store, bucket, key, ETag and size,
so that the next run on the same data takes it from the node instead of the store.

A run still lists its bucket with its own credentials every time, and an object is taken from
the cache only when that listing gave it with the same ETag and size: the store checks the
access, and a changed object is fetched again. Only new and changed objects are downloaded.

    <data_cache_dir>/objects/<h[:2]>/<h>   one file per object version, root's, 0444
    <data_cache_dir>/locks/<h>             flock'd by the process fetching that object
    <data_cache_dir>/tmp/                  downloads in flight

DATA_DIR is filled with hard links to the cached files when the worker is root (a file the
run cannot change: root's and read-only; deleting its link harms no other run), by copies
when it is not or the cache is on another filesystem. Two runs on the node that need one
object fetch it once: the first holds its lock, the other waits for it. Eviction removes the
least recently used files past `data_cache_max_bytes`, never one a run's DATA_DIR links to
(its link count is above one). Any trouble with the cache itself (full, unwritable, broken)
falls back to plain staging, with a warning for the run's load log, never a failed run.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.storage import ObjectStore, TransferStats
from common.storage.base import ObjectInfo, TransferProgress, target_inside

log = logging.getLogger(__name__)


@dataclass
class Staged:
    """What one staging moved: from the store (`fetched`) and from the cache."""

    fetched: TransferStats = field(default_factory=TransferStats)
    cached: TransferStats = field(default_factory=TransferStats)
    evicted: int = 0
    warning: str = ""  # the cache could not be used: plain staging, and why

    @property
    def total(self) -> TransferStats:
        return TransferStats(
            self.fetched.objects + self.cached.objects, self.fetched.bytes + self.cached.bytes
        )


def object_key(store: str, bucket: str, obj: ObjectInfo) -> str | None:
    """The cache's name for one version of an object; None when the listing gave no ETag."""
    if not obj.etag:
        return None
    text = "\0".join((store, bucket, obj.key, obj.etag.strip('"'), str(obj.size)))
    return hashlib.sha256(text.encode()).hexdigest()


class DataCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes
        self.objects, self.locks, self.tmp = (self.root / n for n in ("objects", "locks", "tmp"))

    def path(self, name: str) -> Path:
        return self.objects / name[:2] / name

    def stage(
        self,
        store: ObjectStore,
        bucket: str,
        dest: Path,
        should_stop: Callable[[], bool] | None = None,
        progress: TransferProgress | None = None,
    ) -> Staged:
        """Every object of the bucket under `dest`, from the cache where it holds the listed
        version, else from the store (kept for next time)."""
        progress = progress or TransferProgress("downloading")
        objects = store.list(bucket)
        progress.expect(len(objects), sum(o.size for o in objects))
        root = dest.resolve()
        for obj in objects:
            target_inside(root, obj.key)  # a key that climbs out fails before anything moves
        try:
            for folder in (self.objects, self.locks, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
            return self._stage(store, bucket, objects, root, should_stop, progress)
        except OSError as exc:
            # The cache failed us: start DATA_DIR afresh (never write through a link to a
            # cached file) and stage it plainly.
            for entry in list(root.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            staged = Staged(warning=f"data cache {self.root} not used ({exc}): staged plainly")
            staged.fetched = store.download_objects(bucket, objects, root, should_stop, progress)
            return staged

    def _stage(self, store, bucket, objects, root, should_stop, progress) -> Staged:
        staged = Staged()
        names = {obj.key: object_key(store.description, bucket, obj) for obj in objects}
        plain = [o for o in objects if names[o.key] is None]
        mine, theirs, late = [], [], []  # (object, its lock's fd)
        try:
            for obj in objects:
                name = names[obj.key]
                if name is None or self.path(name).exists():
                    continue
                fd = os.open(self.locks / name, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    mine.append((obj, fd))
                except BlockingIOError:
                    theirs.append((obj, fd))  # another run on the node fetches it now
            fetch = [obj for obj, _ in mine]
            staged.fetched = self._fetch(store, bucket, fetch, names, should_stop, progress)
            for _, fd in mine:  # ours are in the cache now: let waiters see them
                fcntl.flock(fd, fcntl.LOCK_UN)
            for obj, fd in theirs:
                fcntl.flock(fd, fcntl.LOCK_EX)  # until the other run's fetch is done
                if not self.path(names[obj.key]).exists():
                    late.append(obj)  # it failed there: fetch it here
            staged.fetched.absorb(self._fetch(store, bucket, late, names, should_stop, progress))
        finally:
            for _, fd in mine + theirs:
                os.close(fd)
        if plain:
            staged.fetched.absorb(
                store.download_objects(bucket, plain, root, should_stop, progress)
            )
        fetched = {obj.key for obj in fetch + late}
        link = os.geteuid() == 0
        for obj in objects:
            name = names[obj.key]
            if name is None:
                continue
            if should_stop is not None and should_stop():
                break
            source, target = self.path(name), target_inside(root, obj.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            _place(source, target, link)
            os.utime(source)  # used now: the last to be evicted
            if obj.key not in fetched:
                staged.cached.add(obj.size)
                progress.add_bytes(obj.size)
                progress.object_done()
        staged.evicted = self.evict()
        return staged

    def _fetch(self, store, bucket, objects, names, should_stop, progress) -> TransferStats:
        """Download `objects` into the cache (through its tmp folder), each read-only."""
        if not objects:
            return TransferStats()
        landing = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            got = store.download_objects(bucket, objects, landing, should_stop, progress)
            for obj in objects:
                source = target_inside(landing, obj.key)
                if not source.is_file() or source.stat().st_size != obj.size:
                    continue  # stopped early, or changed: not kept
                source.chmod(0o444)
                final = self.path(names[obj.key])
                final.parent.mkdir(exist_ok=True)
                os.replace(source, final)
            return got
        finally:
            shutil.rmtree(landing, ignore_errors=True)

    def evict(self) -> int:
        """Remove the least recently used files past the size limit, none a run links to."""
        files = []
        for folder in self.objects.iterdir() if self.objects.is_dir() else ():
            for entry in os.scandir(folder):
                st = entry.stat(follow_symlinks=False)
                files.append((st.st_mtime, st.st_size, st.st_nlink, Path(entry.path)))
        total = sum(size for _, size, _, _ in files)
        removed = 0
        for _, size, links, path in sorted(files):
            if total <= self.max_bytes:
                break
            if links > 1:
                continue  # a running run's DATA_DIR has it
            path.unlink(missing_ok=True)
            (self.locks / path.name).unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed


def _place(source: Path, target: Path, link: bool) -> None:
    """The cached file at `target`: a hard link (root's, 0444) or, failing that, a copy."""
    if link:
        try:
            os.link(source, target)
            return
        except OSError as exc:
            log.debug("cannot link %s: %s; copying", source, exc)
    shutil.copyfile(source, target)
