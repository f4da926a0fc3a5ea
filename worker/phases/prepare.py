"""The run's working folder on the node, fresh and the worker's only (worker/rundirs.py)."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Phase
from worker.runuser import prepare_work_dir


class Prepare(Phase):
    name = "prepare"

    def run(self, attempt: Attempt) -> None:
        prepare_work_dir(attempt.settings.work_dir)
        attempt.dirs.create()
        attempt.dirs.log_file.touch()
