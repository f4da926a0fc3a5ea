"""The run's training metrics while its command runs (worker/metrics.py), and their summaries
on the run once it ended, for `show`, the experiments and the dashboard."""

from __future__ import annotations

from common.layout import EMETRICS_FILE, METRICS_FILE
from common.metrics import RunMetrics
from worker.attempt import Attempt
from worker.metrics import (
    VAL_DICT_FILE,
    JsonLinesSource,
    LogSource,
    MetricsCollector,
    ValDictSource,
)
from worker.patience import patiently
from worker.pipeline import Hook
from worker.tensorboard import TensorBoardSource, tensorboard_roots


class CollectMetrics(Hook):
    def before(self, attempt: Attempt) -> None:
        settings, dirs = attempt.settings, attempt.dirs
        self.store = RunMetrics(attempt.ctx.runs.redis, attempt.id)
        patiently(self.store.reset, settings.redis_outage_seconds, f"{attempt.id} metrics")
        self.log_source = LogSource(
            attempt.manifest.log_patterns, dirs.log_file, settings.metrics_regex_seconds
        )
        self.json_source = JsonLinesSource(dirs.log / EMETRICS_FILE)
        roots, named = tensorboard_roots(attempt.manifest.tensorboard_in, dirs.log, dirs.result)
        self.tensorboard = TensorBoardSource(roots, named)
        sources = (self.log_source, self.json_source, ValDictSource(dirs.result / VAL_DICT_FILE))
        self.collector = MetricsCollector(
            (*sources, self.tensorboard),
            dirs.log / METRICS_FILE,
            self.store,
            settings.metrics_max_points,
            settings.metrics_max_stored_points,
            settings.metrics_poll_seconds,
        )
        (dirs.log / METRICS_FILE).touch()
        attempt.start_later(self.collector)

    def after(self, attempt: Attempt) -> None:
        attempt.start_deferred()
        self.collector.close()
        self.tensorboard.close()
        attempt.event_files = self.tensorboard.stored_keys()
        self.store.close(attempt.settings.retention_seconds)
        summaries = self.collector.summaries()
        counts = {
            "metric_points": sum(s["count"] for s in summaries.values()),
            "metric_points_dropped": self.collector.dropped_points,
            "metric_regex_timeouts": self.log_source.timeouts,
            "metric_bad_lines": self.json_source.bad_lines,
            "metric_bad_event_files": self.tensorboard.broken_files,
        }
        attempt.usage.update({k: v for k, v in counts.items() if v})
        if summaries:
            attempt.update(metrics=summaries)
