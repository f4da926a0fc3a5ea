"""The run's working folder on the node, fresh and the worker's only: the pool process's spare
one renamed into place, when it has one (worker/rundirs.py)."""

from __future__ import annotations

from worker.attempt import Attempt
from worker.pipeline import Phase
from worker.rundirs import spare_folder
from worker.runuser import prepare_work_dir


class Prepare(Phase):
    name = "prepare"

    def run(self, attempt: Attempt) -> None:
        work_dir = attempt.settings.work_dir
        prepare_work_dir(work_dir)
        attempt.dirs.create(spare_folder(work_dir))
