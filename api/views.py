"""How a run is shown over HTTP: the exact state, never a credential."""

from __future__ import annotations

from common.attempts import attempts
from common.metrics import RunMetrics
from common.run import HistoryEntry, Run


def run_location(run_id: str) -> str:
    return f"/v3/models/{run_id}"


def run_summary(run: Run) -> dict:
    return {
        "model_id": run.id,
        "url": run_location(run.id),
        "name": run.name,
        "user": run.user,
        "state": run.state.value,
        "submitted_at": run.submitted_at,
        "resource": run.resource.value,
        "error_code": run.error_code.value if run.error_code else None,
        "ended_at": run.ended_at or None,
        "worker": run.worker or None,  # the node it ran on (or runs on)
        "status_message": run.status_message,  # why a failed run failed, in words
        # A trial of an experiment: its id, trial number and values.
        "experiment": run.experiment or None,
    }


def live_summaries(connection, run: Run) -> dict[str, dict]:
    """Each metric's summary (goal, count, last, best): from Redis while it has them (live
    while the run goes on), else as kept on the run's record."""
    summaries = RunMetrics(connection, run.id).summaries()
    if not summaries:
        return run.metrics
    return {name: public_summary(s) for name, s in summaries.items()}


def public_summary(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "index"}


def run_detail(run: Run, history: list[HistoryEntry], metrics: dict | None = None) -> dict:
    results = run.manifest.get("training_results", {})
    return {
        **run_summary(run),
        "updated_at": run.updated_at or None,
        "framework": {"name": run.framework_name, "version": run.framework_version},
        "gpu_count": run.gpu_count,
        "command": run.command,
        "gpus": run.gpus,
        "exit_code": run.exit_code,
        "usage": run.usage,
        "progress": run.progress,
        "results_location": {
            "type": results.get("type"),
            "bucket": results.get("bucket"),
            "prefix": f"{run.id}/",
        },
        "history": [entry.to_dict() for entry in history],
        # Each claim of the run: its node, start, end, why it ended, the checkpoint it got.
        "attempts": attempts(history, run.resumed),
        # Results that could not be stored (S303), kept on the node; `dlaas store` asks again.
        "kept_results": run.kept_results or None,
        # Set by the worker once the run's Python environment is ready.
        "environment": run.environment or None,
        "metrics": run.metrics if metrics is None else metrics,
        # Stored redacted at submission: passwords and secret keys never come back.
        "manifest": run.manifest,
    }
