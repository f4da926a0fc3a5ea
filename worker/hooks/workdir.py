"""The run's working folder is removed when the attempt ends, or kept root's only for
debugging (DLAAS_KEEP_WORKDIR): no later run can read it."""

from __future__ import annotations

import shutil

from worker.attempt import Attempt
from worker.pipeline import Hook
from worker.runuser import reclaim


class RemoveWorkDir(Hook):
    def after(self, attempt: Attempt) -> None:
        if not attempt.settings.keep_workdir:
            shutil.rmtree(attempt.dirs.root, ignore_errors=True)
        else:
            reclaim(attempt.dirs, None)
