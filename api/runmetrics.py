"""`GET /v3/models/<id>/metrics`: a run's training metrics, each series' summary (last and
best) and its points, all of them or one (`?name=`), from a step on (`?since=`).

While the run is young they come from Redis (live); once its keys expired, from the stored
`learner-1/metrics.jsonl`; failing that, the summaries kept on the run's record.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request

from api.auth import authenticated
from api.errors import ApiError
from api.logs import results_store
from api.models import RUN_ID, own_run
from api.openapi import contract, json_response, query_param, ref
from api.params import IntArg
from api.services import current_services
from api.views import live_summaries, public_summary
from common.layout import METRICS_KEY, run_key
from common.metrics import RunMetrics, read_jsonl
from common.run import Run
from common.storage import StorageError

bp = Blueprint("runmetrics", __name__, url_prefix="/v3/models")

SINCE_STEP = IntArg("since", "Points from this step on", default=0, low=0)


def _stored(run: Run, since: int, name: str | None):
    """Summaries and points from the stored metrics.jsonl; None when it cannot be read."""
    try:
        store, results = results_store(run)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "metrics.jsonl"
            store.get_file(results.bucket, run_key(run.id, METRICS_KEY), local)
            with open(local, encoding="utf-8", errors="replace") as f:
                return read_jsonl(f, since, name)
    except (StorageError, OSError, ValueError) as exc:
        current_app.logger.info("%s: stored metrics not readable: %s", run.id, exc)
        return None


@bp.get("/<run_id>/metrics")
@authenticated
@contract(
    "The run's training metrics: each series' last and best point, and its points",
    tag="models",
    params=[
        RUN_ID,
        query_param("name", "Only this metric", {"type": "string"}),
        SINCE_STEP.parameter(),
    ],
    ok={200: json_response("Its metrics", ref("RunMetrics"))},
    errors=(400, 404),
)
def metrics(run_id: str):
    run = own_run(run_id)
    since = SINCE_STEP.read()
    name = request.args.get("name") or None
    live = RunMetrics(current_services().redis, run.id)
    summaries = live.summaries()
    if summaries:
        source = "live"
        if name is not None:
            summaries = {name: summaries[name]} if name in summaries else {}
        points = live.points(summaries, since)
    else:
        stored = _stored(run, since, name) if run.state.terminal else None
        source, (summaries, points) = ("stored", stored) if stored else ("summary", ({}, {}))
        if not stored:
            summaries = {n: s for n, s in run.metrics.items() if name in (None, n)}
    if name is not None and name not in summaries:
        known = ", ".join(sorted(live_summaries(current_services().redis, run))) or "none yet"
        raise ApiError(404, f"no metric {name!r} in {run.id} (its metrics: {known})", field="name")
    series = {n: dict(public_summary(s), points=points.get(n, [])) for n, s in summaries.items()}
    return jsonify(
        {"model_id": run.id, "state": run.state.value, "source": source, "metrics": series}
    )
