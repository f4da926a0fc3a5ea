"""Training metrics from TensorBoard event files: the fourth way in (worker/metrics.py has the
other three). Programs that log with `torch.utils.tensorboard.SummaryWriter`, Keras' TensorBoard
callback or Lightning's default logger need no metric declared in their manifest.

Event files (`*tfevents*`) anywhere under LOG_DIR or RESULT_DIR, or under the folder FfDL's
`evaluation_metrics: {type: tensorboard, in: ...}` names, are found by a bounded look at those
folders and read from where the last look stopped, by the `tensorboard` package's own loader
(its TFRecord reader checks each record's CRC; a record not yet whole is read again next time).
Scalars, the old `simple_value` and the new scalar tensors alike, become series named by their
tag, with their step and wall time. A series' name is prefixed by its file's folder when there
are several folders, as TensorBoard shows them: relative to the `in:` folder when the manifest
names one (`train/loss`, `validation/loss`); without one, relative to the folder they share
(a folder found alone at first keeps bare tags; those found after it are prefixed).

Nothing is followed through links: a file is opened with O_NOFOLLOW, must be a plain file with
one link, and the loader reads it through `/proc/self/fd`. A corrupt file costs its own points
from the bad record on. The `tensorboard` package is imported when the first event file is
found, never for a run that writes none.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from common.clock import iso, utcnow
from common.layout import TENSORBOARD_FOLDER
from common.metrics import finite

log = logging.getLogger(__name__)

EVENT_FILE_MARK = "tfevents"  # TensorBoard's own test (io_wrapper.IsTensorFlowEventsFile)
MAX_EVENT_FILES = 100
MAX_LOOK_ENTRIES = 10_000  # folder entries one look at the run's folders visits, at most
# Of the metrics thread's CPU per poll, at most (the rest waits for the next poll): about 25 us
# a record here (the loader's pure-Python CRC, protobuf), 100,000 scalars in 2.5 s.
READ_CPU_SECONDS = 0.2
YIELD_EVERY = 4  # records (about 0.1 ms) between two offers of the GIL to the other threads

Found = tuple[str, int | None, float, str, str | None]


def tensorboard_roots(
    folder: str, log_dir: Path, result_dir: Path
) -> tuple[list[Path], Path | None]:
    """Where a run's event files are read: the manifest's `in:` folder (`$LOG_DIR/tb`, see
    common/metricspec.py), which also names the series; or LOG_DIR and RESULT_DIR."""
    if not folder:
        return [log_dir, result_dir], None
    root, _, rest = folder.partition("/")
    named = (log_dir if root == "$LOG_DIR" else result_dir) / rest
    return [named], named


def event_files(roots: Sequence[Path], budget: int = MAX_LOOK_ENTRIES) -> list[Path]:
    """The event files under `roots` (sorted), links never followed, at most `budget` folder
    entries visited in all."""
    found: list[Path] = []
    folders = [root for root in roots]
    while folders and budget > 0:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    budget -= 1
                    if budget <= 0:
                        break
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif EVENT_FILE_MARK in entry.name and entry.is_file(follow_symlinks=False):
                        found.append(Path(entry.path))
        except OSError:
            continue  # gone, or not a folder: nothing there
    return sorted(found)


def _when(wall_time: float) -> str:
    """An event's wall time as the other sources stamp points (now, when it makes no sense)."""
    try:
        return iso(datetime.fromtimestamp(wall_time, UTC))
    except (ValueError, OverflowError, OSError):
        return iso(utcnow())


def _single(number: float) -> float | None:
    """A float32 as written (0.6, not 0.6000000238418579): its 7 significant digits."""
    number = finite(number)
    return None if number is None else float(f"{number:.7g}")


def _open_plain(path: Path) -> int | None:
    """A read-only fd on `path` when it is a plain file with one link, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not os.path.isfile(f"/proc/self/fd/{fd}") or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def _is_plain(path: Path) -> bool:
    fd = _open_plain(path)
    if fd is not None:
        os.close(fd)
    return fd is not None


class _EventFile:
    """One event file, open, and its loader's place in it."""

    def __init__(self, path: Path, fd: int, prefix: str):
        from tensorboard.backend.event_processing.event_file_loader import (
            LegacyEventFileLoader,
        )

        self.path, self.fd, self.prefix = path, fd, prefix
        self.loader = LegacyEventFileLoader(f"/proc/self/fd/{fd}")
        self.plugins: dict[str, str] = {}  # tag -> its plugin (named on its first value only)
        self.broken = False

    def read(self, until: float) -> tuple[list[Found], bool]:
        """The scalars of the records from where the last read stopped, until the thread's
        CPU clock passes `until`; and whether it did (more may wait)."""
        from tensorboard.util import tensor_util

        found: list[Found] = []
        for read, event in enumerate(self.loader.Load(), 1):
            if event.HasField("summary"):
                seen = _when(event.wall_time)
                for value in event.summary.value:
                    number = self._scalar(value, tensor_util)
                    if number is not None:
                        found.append((f"{self.prefix}{value.tag}", event.step, number, seen, None))
            if read % YIELD_EVERY == 0:
                if time.thread_time() > until:
                    return found, True
                # Let the log pump (same process) have the GIL if it waits for it: a thread
                # that keeps it runs 5 ms before it must let go, while the pipe fills.
                time.sleep(0)
        return found, False

    def _scalar(self, value, tensor_util) -> float | None:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            return _single(value.simple_value)
        if kind != "tensor":
            return None
        plugin = value.metadata.plugin_data.plugin_name
        if plugin:
            self.plugins.setdefault(value.tag, plugin)
        if self.plugins.get(value.tag) != "scalars":
            return None
        array = tensor_util.make_ndarray(value.tensor)
        if array.size != 1:
            return None
        number = array.reshape(-1)[0].item()
        return _single(number) if array.dtype.itemsize == 4 else finite(number)

    def close(self) -> None:
        os.close(self.fd)


class TensorBoardSource:
    """Event files under `roots`, read on each poll; `root` given (the manifest's `in:`):
    series prefixed by their folder relative to it."""

    def __init__(self, roots: Sequence[Path], named_root: Path | None = None):
        self.roots = tuple(roots)
        self.named_root = named_root
        self.files: dict[Path, _EventFile] = {}
        self.skipped: set[Path] = set()  # links, hard links, beyond MAX_EVENT_FILES
        self.prefixes: dict[Path, str] = {}  # folder -> the prefix of its series
        self.broken_files = 0
        self.unread = False

    def read(self) -> Iterator[Found]:
        self._look()
        until = time.thread_time() + READ_CPU_SECONDS
        self.unread = False
        for event_file in self.files.values():
            if event_file.broken or self.unread:
                continue
            try:
                found, self.unread = event_file.read(until)
            except Exception as exc:  # a file the loader cannot read costs its own points
                log.warning("tensorboard: %s unreadable, skipped: %s", event_file.path, exc)
                event_file.broken = True
                self.broken_files += 1
                continue
            yield from found

    def _look(self) -> None:
        found = [
            p for p in event_files(self.roots) if p not in self.files and p not in self.skipped
        ]
        self._name_folders({path.parent for path in found})
        for path in found:
            fd = _open_plain(path) if len(self.files) < MAX_EVENT_FILES else None
            if fd is None:
                self.skipped.add(path)
                continue
            try:
                self.files[path] = _EventFile(path, fd, self.prefixes[path.parent])
            except Exception as exc:  # the loader refused it: this file's points only
                log.warning("tensorboard: %s not read: %s", path, exc)
                os.close(fd)
                self.skipped.add(path)
                self.broken_files += 1

    def _name_folders(self, folders: set[Path]) -> None:
        """Each new folder's prefix, kept for the run: relative to the named root; else bare
        for a lone first folder, and relative to the folder all share for the others."""
        new = sorted(folders - set(self.prefixes))
        if not new:
            return
        if self.named_root is not None:
            shared = self.named_root
        elif not self.prefixes and len(new) == 1:
            self.prefixes[new[0]] = ""
            return
        else:
            shared = Path(os.path.commonpath([*self.prefixes, *new]))
        for folder in new:
            relative = os.path.relpath(folder, shared)
            if relative == ".":
                relative = "" if self.named_root is not None else folder.name
            self.prefixes[folder] = f"{relative}/" if relative else ""

    def stored_keys(self) -> list[tuple[Path, str]]:
        """Each event file read (or, when none was, each found now), and its key under the
        learner's folder: `tensorboard/<its series' prefix>/<name>`, so that `tensorboard
        --logdir` over the stored folder shows the runs so named."""
        paths = list(self.files) or [p for p in event_files(self.roots) if _is_plain(p)]
        self._name_folders({path.parent for path in paths})
        return [
            (path, f"{TENSORBOARD_FOLDER}/{self.prefixes[path.parent]}{path.name}")
            for path in paths
        ]

    def close(self) -> None:
        for event_file in self.files.values():
            event_file.close()
