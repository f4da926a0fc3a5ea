"""CHECKPOINT_DIR around the command: its last checkpoint given back on a run's next attempt
(before the command starts), copies to `<run-id>/checkpoints/` while it runs, one when it is
stopped (cancel, time limit, drain) before its processes get the first signal, and one last
copy once it has ended (what they wrote while stopping; what they deleted then stays). Files
deleted from CHECKPOINT_DIR are removed from the bucket at the next copy. A run whose claim was
lost copies nothing more: its next attempt, elsewhere, owns the checkpoint now."""

from __future__ import annotations

import threading

from common.layout import LOAD_LOG, STORE_LOG, run_key
from common.storage import StorageError
from worker.attempt import Attempt
from worker.checkpoints import CHECKPOINTS, CheckpointCopier, restore
from worker.pipeline import Hook
from worker.supervisor import StopReason


class CopyCheckpoints(Hook):
    def before(self, attempt: Attempt) -> None:
        store, bucket = attempt.results_store, attempt.manifest.training_results.bucket
        scratch = attempt.settings.work_dir
        if attempt.run.attempt > 1:
            try:
                got = restore(store, bucket, attempt.id, attempt.dirs.checkpoint, scratch)
            except (StorageError, OSError) as exc:
                attempt.note(f"checkpoint not given back ({exc}): starting afresh", LOAD_LOG)
            else:
                if got.files:
                    attempt.resumed = {
                        "files": got.files,
                        "bytes": got.bytes,
                        "from": f"{bucket}/{run_key(attempt.id, CHECKPOINTS)}",
                    }
                    attempt.note(
                        f"checkpoint given back: {got.files} files, {got.bytes} bytes from "
                        f"{attempt.resumed['from']} into CHECKPOINT_DIR",
                        LOAD_LOG,
                    )
                    resumed = dict(
                        attempt.run.resumed, **{str(attempt.run.attempt): attempt.resumed}
                    )
                    attempt.update(resumed=resumed)
        self.copier = CheckpointCopier(
            attempt.dirs.checkpoint,
            scratch,
            lambda path, rel: store.put_file(path, bucket, run_key(attempt.id, CHECKPOINTS + rel)),
            attempt.settings.checkpoint_seconds,
            lambda rel: store.delete(bucket, run_key(attempt.id, CHECKPOINTS + rel)),
        )
        self.copier.remember()
        attempt.start_later(self.copier)
        attempt.before_stop.append(lambda: self._stopping(attempt))

    def _stopping(self, attempt: Attempt) -> None:
        """The copy at the stop, waited for at most the grace period: a store that hangs
        delays the stop by no more than that (the copy goes on beside the signals)."""
        if _lost(attempt):
            return
        copying = threading.Thread(target=self.copier.copy_changed, name="checkpoint-at-stop")
        copying.start()
        copying.join(attempt.settings.cancel_grace_seconds)
        if copying.is_alive():
            attempt.note(
                f"checkpoint copy at the stop not done after "
                f"{attempt.settings.cancel_grace_seconds:g} s: stopping the processes meanwhile",
                STORE_LOG,
            )

    def after(self, attempt: Attempt) -> None:
        attempt.start_deferred()
        # What a stopped program deleted while stopping (its cleanup) stays in the bucket.
        copied = self.copier.close(final=not _lost(attempt), deletions=attempt.stop.request is None)
        if copied.files or self.copier.removed:
            attempt.note(
                f"checkpoints: {copied.files} files, {copied.bytes} bytes copied to "
                f"{run_key(attempt.id, CHECKPOINTS)} in {self.copier.copies} copies; "
                f"{self.copier.removed} deleted files removed there",
                STORE_LOG,
            )


def _lost(attempt: Attempt) -> bool:
    request = attempt.stop.request
    return request is not None and request.reason is StopReason.LOST
