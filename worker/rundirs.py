"""A run's folders on the worker: MODEL_DIR, DATA_DIR, RESULT_DIR, CHECKPOINT_DIR, LOG_DIR,
TMPDIR, HOME."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from common.layout import TRAINING_LOG


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

    def create(self) -> None:
        """Fresh (what an earlier attempt left is removed), and the worker's only (0700)
        until it is handed over."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(mode=0o700)
        self.root.chmod(0o700)
        for path in (*self.owned_by_run, self.log):
            path.mkdir(mode=0o700)
