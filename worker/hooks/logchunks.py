"""Copies of the log to the results bucket every few seconds while the command runs, so a lost
node loses at most the last few seconds of it (worker/logpump.py ChunkUploader)."""

from __future__ import annotations

from common.layout import LOG_CHUNKS_PREFIX, run_key
from worker.attempt import Attempt
from worker.logpump import ChunkUploader
from worker.pipeline import Hook


class UploadLogChunks(Hook):
    def before(self, attempt: Attempt) -> None:
        store, bucket = attempt.results_store, attempt.manifest.training_results.bucket
        settings = attempt.settings
        self.chunks = ChunkUploader(
            attempt.dirs.log_file,
            lambda path, key: store.put_file(path, bucket, run_key(attempt.id, key)),
            LOG_CHUNKS_PREFIX,
            settings.log_chunk_seconds,
            settings.log_chunk_bytes,
        )
        attempt.start_later(self.chunks)

    def after(self, attempt: Attempt) -> None:
        attempt.start_deferred()
        self.chunks.close()
        attempt.uploaded_chunks.extend(self.chunks.uploaded)
