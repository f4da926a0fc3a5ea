"""The live log in Redis: a fresh stream for the attempt's command, fed from the log pump while
it runs (dropped, and counted, when Redis lags); a short tail kept once the attempt ends."""

from __future__ import annotations

from common.livelog import LiveLog
from worker.attempt import Attempt
from worker.logpump import LiveStreamer
from worker.patience import patiently
from worker.pipeline import Hook


class StreamLiveLog(Hook):
    def before(self, attempt: Attempt) -> None:
        settings = attempt.settings
        live = LiveLog(attempt.ctx.runs.redis, attempt.id, settings.live_log_max_entries)
        patiently(live.reset, settings.redis_outage_seconds, f"{attempt.id} live log")
        self.streamer = LiveStreamer(live)
        attempt.start_later(self.streamer)
        attempt.log_listeners.append(self.streamer)

    def after(self, attempt: Attempt) -> None:
        attempt.start_deferred()
        self.streamer.close()
        if self.streamer.dropped_lines:
            attempt.usage["live_log_dropped_lines"] = self.streamer.dropped_lines


class KeepLiveLogTail(Hook):
    def after(self, attempt: Attempt) -> None:
        LiveLog(attempt.ctx.runs.redis, attempt.id).close(attempt.settings.retention_seconds)
