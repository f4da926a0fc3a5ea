"""`/v3/experiments`: sweeps of training runs. An experiment is submitted like a run (the model
zip and the manifest) plus an experiment file (the original service's
`hyper_parameters_optimization`, common/experiment.py); the controller (worker/controller.py)
makes its trials, each an ordinary run, and ends it. Here: submit, list, show (with the
leaderboard), cancel and delete.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.auth import audit, authenticated, caller
from api.errors import ApiError
from api.models import checked_upload, form_field, sealed
from api.openapi import contract, json_body, json_response, path_param, ref
from api.params import IntArg
from api.services import current_services
from api.upload import read_form
from common.clock import iso, utcnow
from common.experiment import ExperimentError, ExperimentSpec, parse_experiment
from common.experimentstore import Experiment, ExperimentState, Trial, TrialState, best_trial
from common.ids import is_experiment_id, new_experiment_id
from common.storage import StorageError

LIMIT = IntArg("limit", "Experiments per page", default=50, low=1, high=100)
OFFSET = IntArg("offset", "Experiments to skip", default=0, low=0, high=10**9)

bp = Blueprint("experiments", __name__, url_prefix="/v3/experiments")

EXPERIMENT_ID = path_param("experiment_id", "The experiment's id (experiment-…)")
MAX_EXPERIMENT_BYTES = 256 * 1024


def location(experiment_id: str) -> str:
    return f"/v3/experiments/{experiment_id}"


@bp.post("")
@authenticated
@contract(
    "Submit an experiment: `model_definition` (zip), `manifest` (YAML) and `experiment` "
    "(YAML: hyper_parameters_optimization) as multipart fields",
    tag="experiments",
    body={
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model_definition", "manifest", "experiment"],
                    "properties": {
                        "model_definition": {"type": "string", "format": "binary"},
                        "manifest": {"type": "string", "format": "binary"},
                        "experiment": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    },
    ok={201: json_response("Running: its first trials are being started", ref("ExperimentNew"))},
    errors=(400, 413, 422),
)
def submit():
    services = current_services()
    settings = services.settings
    form = read_form(
        {
            "manifest": settings.max_manifest_bytes,
            "model_definition": settings.max_zip_bytes,
            "experiment": MAX_EXPERIMENT_BYTES,
        }
    )
    spec = _check_experiment(form_field(form, "experiment"))
    manifest, zip_bytes = checked_upload(form)
    experiment_id = new_experiment_id()
    while services.experiments.exists(experiment_id):
        experiment_id = new_experiment_id()
    try:
        artifact = services.artifacts.put(experiment_id, zip_bytes)
    except StorageError as exc:
        raise ApiError(503, f"the artifact store is unavailable: {exc}") from None
    experiment = Experiment(
        id=experiment_id,
        user=caller().user,
        name=spec.name or manifest.name,
        state=ExperimentState.RUNNING,
        created_at=iso(utcnow()),
        spec=spec.to_dict(),
        manifest=manifest.to_dict(redact=True),
        credentials=sealed(manifest),
        artifact=artifact,
        status_message="starting its first trials",
    )
    try:
        services.experiments.create(experiment)
    except Exception:
        services.artifacts.delete(artifact)
        raise
    audit("experiment.submit", experiment_id, trials=str(spec.trials))
    response = jsonify({"experiment_id": experiment_id, "location": location(experiment_id)})
    response.status_code = 201
    response.headers["Location"] = location(experiment_id)
    return response


def _check_experiment(text: bytes) -> ExperimentSpec:
    limit = current_services().settings.experiment_max_grid_trials
    try:
        return parse_experiment(text, max_grid_trials=limit)
    except ExperimentError as exc:
        raise ApiError(400, f"experiment: {exc}", field=exc.field or "experiment") from None


@bp.get("")
@authenticated
@contract(
    "List your experiments, newest first, a page at a time",
    tag="experiments",
    params=[LIMIT.parameter(), OFFSET.parameter()],
    ok={200: json_response("One page of your experiments", ref("ExperimentList"))},
    errors=(400,),
)
def list_experiments():
    services = current_services()
    offset, limit = OFFSET.read(), LIMIT.read()
    found, total = services.experiments.list_for_user(caller().user, offset, limit)
    summaries = [summary(e, services.experiments.trials(e.id)) for e in found]
    following = offset + len(found)
    return jsonify(
        {
            "experiments": summaries,
            "total": total,
            "offset": offset,
            "limit": limit,
            "next_offset": following if following < total else None,
        }
    )


def own_experiment(experiment_id: str) -> Experiment:
    principal = caller()
    services = current_services()
    found = services.experiments.get(experiment_id) if is_experiment_id(experiment_id) else None
    if found is None or (found.user != principal.user and not principal.admin):
        raise ApiError(404, f"no experiment {experiment_id!r}")
    return found


@bp.get("/<experiment_id>")
@authenticated
@contract(
    "Show an experiment: its state, its search, and its trials as a leaderboard (best first)",
    tag="experiments",
    params=[EXPERIMENT_ID],
    ok={200: json_response("The experiment", ref("ExperimentDetail"))},
    errors=(404,),
)
def show(experiment_id: str):
    services = current_services()
    experiment = own_experiment(experiment_id)
    trials = services.experiments.trials(experiment_id)
    spec = ExperimentSpec.from_dict(experiment.spec)
    leaderboard = []
    best = best_trial(spec.direction, trials)
    runs = {run.id: run for run in services.runs.records([t.run_id for t in trials])}
    for trial in ranked(spec, trials):
        run = runs.get(trial.run_id)
        leaderboard.append(
            {
                "trial": trial.number,
                "run_id": trial.run_id,
                "state": trial.state.value,
                "run_state": run.state.value if run else None,
                "values": trial.values,
                "objective": trial.objective,
                "objective_step": trial.objective_step,
                "message": trial.message,
                "best": best is not None and trial.number == best.number,
            }
        )
    detail = summary(experiment, trials)
    detail.update(
        status_message=experiment.status_message,
        ended_at=experiment.ended_at or None,
        cancel_requested=experiment.cancel_requested or None,
        spec=experiment.spec,
        leaderboard=leaderboard,
    )
    return jsonify(detail)


@bp.patch("/<experiment_id>")
@authenticated
@contract(
    'Cancel an experiment: `{"status": "halt"}`; its active trials are cancelled, no more start',
    tag="experiments",
    params=[EXPERIMENT_ID],
    body=json_body(ref("HaltRequest")),
    ok={202: json_response("Halting", ref("ExperimentHalted"))},
    errors=(400, 404, 409),
)
def patch(experiment_id: str):
    experiment = own_experiment(experiment_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"status"} or body["status"] != "halt":
        raise ApiError(400, 'expected {"status": "halt"}', field="status")
    _cancel(experiment)
    audit("experiment.cancel", experiment_id)
    return jsonify({"experiment_id": experiment_id, "message": "halting"}), 202


def _cancel(experiment: Experiment, delete: bool = False) -> None:
    if experiment.state.terminal and not delete:
        raise ApiError(
            409, f"{experiment.id} has already ended ({experiment.state.value})", code="ended"
        )
    store = current_services().experiments
    fields = {"cancel_requested": caller().user}
    if delete:
        fields["delete_requested"] = "True"
    store.update(experiment.id, **fields)
    store.notify(experiment.id)


@bp.delete("/<experiment_id>")
@authenticated
@contract(
    "Delete an experiment and its trial runs from the service (never their outputs in your "
    "bucket); a running one is cancelled first and goes once its trials have stopped",
    tag="experiments",
    params=[EXPERIMENT_ID],
    ok={
        200: json_response("Deleted", ref("ExperimentDeleted")),
        202: json_response("Cancelling; removed once its trials stopped", ref("ExperimentDeleted")),
    },
    errors=(404,),
)
def delete(experiment_id: str):
    services = current_services()
    experiment = own_experiment(experiment_id)
    if not experiment.state.terminal:
        _cancel(experiment, delete=True)
        audit("experiment.delete", experiment_id, state="cancelling")
        message = "cancelling; it and its trial runs are removed once they have stopped"
        return jsonify({"experiment_id": experiment_id, "deleted": False, "message": message}), 202
    for trial in services.experiments.trials(experiment_id):
        services.runs.delete(trial.run_id, experiment.user)
    services.experiments.delete(experiment)
    if experiment.artifact:
        services.artifacts.delete(experiment.artifact)
    audit("experiment.delete", experiment_id, state="deleted")
    return jsonify({"experiment_id": experiment_id, "deleted": True, "message": "deleted"})


# --- what an experiment looks like -------------------------------------------------------


def summary(experiment: Experiment, trials: list[Trial]) -> dict:
    spec = ExperimentSpec.from_dict(experiment.spec)
    counts = {state.value: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.value] += 1
    best = best_trial(spec.direction, trials)
    return {
        "experiment_id": experiment.id,
        "url": location(experiment.id),
        "name": experiment.name,
        "user": experiment.user,
        "state": experiment.state.value,
        "created_at": experiment.created_at,
        "method": spec.method,
        "sampler": spec.sampler,
        "objective": spec.objective,
        "direction": spec.direction,
        "trials": {"planned": spec.trials, "started": len(trials), **counts},
        "best": (
            {
                "trial": best.number,
                "run_id": best.run_id,
                "objective": best.objective,
                "objective_step": best.objective_step,
                "values": best.values,
            }
            if best
            else None
        ),
    }


def ranked(spec: ExperimentSpec, trials: list[Trial]) -> list[Trial]:
    """Best objective first; trials without one after, by number."""
    sign = -1 if spec.direction == "maximize" else 1
    scored = [t for t in trials if t.objective is not None]
    unscored = [t for t in trials if t.objective is None]
    return sorted(scored, key=lambda t: (sign * t.objective, t.number)) + unscored
