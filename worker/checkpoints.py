"""A run's CHECKPOINT_DIR kept in its results bucket (`<run-id>/checkpoints/`): copied beside
the command every DLAAS_CHECKPOINT_SECONDS (only what changed since the last copy, and what
was deleted removed), when the run is stopped and once more when the command has ended, and
given back to the run's next attempt before its command starts.

The folder is the run user's while the command runs, so it is read without following a link
the run may have put there (os.fwalk with its directory descriptors, each file opened
O_NOFOLLOW and checked to be a regular file), through a root-private snapshot: a run can
only ever copy its own files.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.layout import run_key
from common.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints/"


@dataclass
class Copied:
    files: int = 0
    bytes: int = 0


class CheckpointCopier(threading.Thread):
    def __init__(
        self,
        top: Path,
        scratch: Path,
        upload: Callable[[Path, str], None],
        period: float,
        remove: Callable[[str], None] = lambda rel: None,
    ):
        super().__init__(name="checkpoint-copier", daemon=True)
        self.top, self.scratch, self.upload, self.period = top, scratch, upload, period
        self.remove = remove
        self.seen: dict[str, tuple[int, int, int]] = {}
        self.copied = Copied()
        self.copies = 0
        self.removed = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def remember(self) -> None:
        """What is there now counts as copied (a checkpoint just given back)."""
        for rel, _fd, st in self._files():
            self.seen[rel] = _mark(st)

    def run(self) -> None:
        # At a fixed rate: a long copy does not push the later ones back (one that overran
        # its period is followed by the next at once, never by several in a row).
        due = time.monotonic() + self.period
        while not self._halt.wait(max(0.0, due - time.monotonic())):
            self.copy_changed()
            due = max(due + self.period, time.monotonic())

    def close(self, final: bool = True, deletions: bool = True) -> Copied:
        """Stop the periodic copies and (`final`) take the last one: the command has ended."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=self.period + 60)
        if final:
            self.copy_changed(deletions)
        return self.copied

    def copy_changed(self, deletions: bool = True) -> int:
        """Upload every file changed since the last copy and (`deletions`) remove from the
        bucket what was deleted since; never raises (logged)."""
        with self._lock:
            done = 0
            try:
                present = set()
                for rel, fd, st in self._files():
                    present.add(rel)
                    mark = _mark(st)
                    if self.seen.get(rel) == mark:
                        continue
                    self._upload_from(fd, rel)
                    self.seen[rel] = mark
                    self.copied.files += 1
                    self.copied.bytes += st.st_size
                    done += 1
                for rel in sorted(set(self.seen) - present) if deletions else ():
                    self.remove(rel)
                    del self.seen[rel]
                    self.removed += 1
            except (OSError, StorageError) as exc:
                log.warning("checkpoint copy of %s: %s", self.top, exc)
            self.copies += 1
            return done

    def _files(self):
        """(relative path, open fd, its stat) of each regular file, no link followed."""
        if not self.top.is_dir():
            return
        for dirpath, _dirs, names, dirfd in os.fwalk(self.top, follow_symlinks=False):
            folder = os.path.relpath(dirpath, self.top)
            for name in sorted(names):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
                except OSError:
                    continue  # a link, or gone meanwhile
                try:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode):
                        yield os.path.normpath(os.path.join(folder, name)), fd, st
                finally:
                    os.close(fd)

    def _upload_from(self, fd: int, rel: str) -> None:
        handle, snapshot = tempfile.mkstemp(dir=self.scratch, prefix=".checkpoint-")
        try:
            with os.fdopen(handle, "wb") as out, os.fdopen(os.dup(fd), "rb") as src:
                src.seek(0)
                shutil.copyfileobj(src, out, 1024 * 1024)
            self.upload(Path(snapshot), rel)
        finally:
            os.unlink(snapshot)


def _mark(st: os.stat_result) -> tuple[int, int, int]:
    """A file's version as the copier tells them apart: size, mtime and inode (a file
    replaced by a rename is a new one; one rewritten in place within the filesystem's clock
    tick, at the same size, is not seen until it changes again)."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def restore(store: ObjectStore, bucket: str, run_id: str, dest: Path, scratch: Path) -> Copied:
    """The run's last checkpoint from its results bucket into `dest` (empty: none kept)."""
    objects = store.list(bucket, run_key(run_id, CHECKPOINTS))
    got = Copied()
    if not objects:
        return got
    landing = Path(tempfile.mkdtemp(dir=scratch, prefix=".restore-"))
    try:
        store.download_objects(bucket, objects, landing)
        kept = landing / run_id / CHECKPOINTS.rstrip("/")
        for entry in kept.iterdir():
            shutil.move(str(entry), str(dest / entry.name))
        got.files, got.bytes = len(objects), sum(o.size for o in objects)
        return got
    finally:
        shutil.rmtree(landing, ignore_errors=True)
