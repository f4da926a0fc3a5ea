"""A run's folders on the worker: MODEL_DIR, DATA_DIR, RESULT_DIR, CHECKPOINT_DIR, LOG_DIR,
TMPDIR, HOME, and its logs; and the spare one each pool process makes ahead for its next run.

A run's folder is 7 folders and 5 log files, each a new inode: 0.4 to 0.9 ms apiece on this
machine's disk, in the kernel, on the run's way to its command. A pool process makes the
next run's folder once its run has ended (or when it starts), while it has no run, as
`.spare-<pid>` in the work directory; the next run renames it into place (one rename), or
makes its own when there is none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import psutil

from common.layout import RUN_LOGS, TRAINING_LOG
from worker.keptthreads import kept_pool

log = logging.getLogger(__name__)

SPARE_PREFIX = ".spare-"
# How long a run waits for its spare folder still being made before it makes its own.
SPARE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class RunDirs:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def result(self) -> Path:
        return self.root / "result"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def model_zip(self) -> Path:
        """The submitted zip, as the worker fetched it."""
        return self.root / "model.zip"

    @property
    def log_file(self) -> Path:
        return self.log / TRAINING_LOG

    @property
    def owned_by_run(self) -> tuple[Path, ...]:
        """The folders the run user owns while its command runs (see worker/runuser.py)."""
        return (self.model, self.data, self.result, self.checkpoint, self.tmp, self.home)

    def create(self, spare: SpareFolder | None = None) -> None:
        """Fresh (what an earlier attempt left is removed), and the worker's only (0700)
        until it is handed over: the `spare` folder renamed into place when there is one."""
        if self.root.exists():
            shutil.rmtree(self.root)
        if spare is None or not spare.take(self.root):
            build(self)


def build(dirs: RunDirs) -> None:
    """An empty run folder at `dirs.root`: its folders and its (empty) logs, 0700 whatever
    the umask."""
    dirs.root.mkdir(mode=0o700)
    dirs.root.chmod(0o700)
    for path in (*dirs.owned_by_run, dirs.log):
        path.mkdir(mode=0o700)
    for name in RUN_LOGS:
        (dirs.log / name).touch()


class SpareFolder:
    """This pool process's next run folder, made ahead on a kept thread."""

    def __init__(self, work_dir: Path):
        self.path = work_dir / f"{SPARE_PREFIX}{os.getpid()}"
        self._job: futures.Future | None = None

    def make(self) -> None:
        """Start making it (nothing when it is there or being made)."""
        if self._job is None or self._job.done():
            self._job = kept_pool("spare-folder").submit(self._build)

    def _build(self) -> None:
        if self.path.is_dir():
            return
        building = RunDirs(self.path.with_name(self.path.name + ".building"))
        shutil.rmtree(building.root, ignore_errors=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            build(building)
            os.rename(building.root, self.path)
        except OSError as exc:  # a full disk: the next run makes its own, and says why
            log.warning("could not make a spare run folder: %s", exc)
            shutil.rmtree(building.root, ignore_errors=True)

    def take(self, root: Path) -> bool:
        """Rename the spare folder to `root`; False when there is none (the caller makes it)."""
        if self._job is not None:
            futures.wait((self._job,), timeout=SPARE_WAIT_SECONDS)
        try:
            os.rename(self.path, root)
        except OSError:
            return False
        return True


_spares: dict[tuple[int, Path], SpareFolder] = {}


def spare_folder(work_dir: Path) -> SpareFolder:
    """This process's spare run folder in `work_dir`."""
    key = (os.getpid(), work_dir)
    if key not in _spares:
        _spares[key] = SpareFolder(work_dir)
    return _spares[key]


def remove_stale_spares(work_dir: Path) -> list[str]:
    """The spare folders of processes that have ended (a worker killed, a pool child
    replaced); what was removed. A look at the work directory's entries: one per run on
    the node."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(work_dir):
            if not entry.name.startswith(SPARE_PREFIX):
                continue
            pid = entry.name[len(SPARE_PREFIX) :].split(".", 1)[0]
            if pid.isdigit() and psutil.pid_exists(int(pid)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed
