"""The run's working folder is removed when the attempt ends, or kept root's only for
debugging (DLAAS_KEEP_WORKDIR): no later run can read it. Then the next run's folder is made
ahead, while this pool process has no run (worker/rundirs.py)."""

from __future__ import annotations

import shutil

from worker.attempt import Attempt
from worker.pipeline import Hook
from worker.rundirs import spare_folder
from worker.runuser import reclaim


class RemoveWorkDir(Hook):
    def after(self, attempt: Attempt) -> None:
        if not attempt.settings.keep_workdir:
            shutil.rmtree(attempt.dirs.root, ignore_errors=True)
        else:
            reclaim(attempt.dirs, None)
        spare_folder(attempt.settings.work_dir).make()
