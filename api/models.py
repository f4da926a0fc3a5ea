"""`/v3/models`: submit, list, show and delete training runs."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import PurePosixPath

import redis
from flask import Blueprint, jsonify, request

from api.auth import audit, authenticated, caller, ensure_admin
from api.errors import ApiError
from api.openapi import contract, json_body, json_response, obj, path_param, query_param, ref
from api.params import IntArg
from api.services import current_services
from api.upload import read_form
from api.views import live_summaries, run_detail, run_location, run_summary
from common.crypto import CredentialsError
from common.fleet.waiting import explain_wait
from common.fleet.waitlist import WaitList
from common.ids import is_run_id, new_run_id
from common.manifest import Manifest, ManifestError, StoreType, parse_manifest
from common.modelzip import ModelZipError, ZipLimits, check_zip
from common.requirements import REQUIREMENTS_FILE, RequirementsError, parse_requirements
from common.run import Run
from common.runstore import (
    InvalidTransition,
    NotKept,
    Quota,
    QuotaExceeded,
    RunFilter,
    RunNotFound,
)
from common.states import RunState
from common.storage import StorageError, resolve_local_root
from common.submission import new_run, queue_run

log = logging.getLogger(__name__)
bp = Blueprint("models", __name__, url_prefix="/v3/models")

MAX_PAGE = 200
MAX_REQUIREMENTS_BYTES = 1024 * 1024  # a model zip's requirements.txt, read at submission
LIMIT = IntArg("limit", "Runs per page", default=50, low=1, high=MAX_PAGE)
OFFSET = IntArg("offset", "Runs to skip", default=0, low=0, high=10**9)
RUN_ID = path_param(
    "run_id", "The run's `model_id` (`training-` and 9 letters or digits)", {"type": "string"}
)


def form_field(form: dict[str, bytes], field: str) -> bytes:
    """One field of the upload (a file part, or for the manifest a plain form field too)."""
    if field not in form:
        raise ApiError(400, f"{field}: required (multipart field)", field=field)
    if not form[field]:
        raise ApiError(400, f"{field}: empty", field=field)
    return form[field]


def _check_manifest(text: bytes) -> Manifest:
    services = current_services()
    settings = services.settings
    try:
        manifest = parse_manifest(text, frameworks=services.frameworks)
    except ManifestError as exc:
        raise ApiError(
            400, f"manifest: {exc}", field=exc.field or "manifest", code="C101"
        ) from None
    parts = (
        ("training_data_reference[0]", manifest.training_data),
        ("training_results_reference", manifest.training_results),
    )
    for where, store in parts:
        if store.type.value not in settings.store_types:
            raise ApiError(
                422,
                f"manifest: {where}.source.type: {store.type.value!r} stores are not enabled on "
                f"this service (enabled: {', '.join(settings.store_types)})",
                field=f"{where}.type",
                code="C101",
            )
        if store.type is StoreType.LOCAL:
            try:
                resolve_local_root(settings.local_store_root, store.connection["path"])
            except StorageError as exc:
                raise ApiError(
                    400,
                    f"manifest: {where}.connection.path: {exc}",
                    field=f"{where}.connection.path",
                    code="C101",
                ) from None
    return manifest


def _check_requirements(zip_bytes: bytes) -> None:
    """The zip's top-level requirements.txt, if any, read as the worker will read it (after
    check_zip: the archive is sound); RequirementsError names the line at fault."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        # Named as the unpacking resolves names (`./requirements.txt` too); the last one wins.
        found = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and str(PurePosixPath(info.filename.replace("\\", "/"))) == REQUIREMENTS_FILE
        ]
        if not found:
            return
        info = found[-1]
        # Bounded: a real requirements.txt is a few KiB; the zip limits allow far more.
        if info.file_size > MAX_REQUIREMENTS_BYTES:
            raise RequirementsError(
                f"{REQUIREMENTS_FILE}: {info.file_size} bytes, larger than the limit of "
                f"{MAX_REQUIREMENTS_BYTES}"
            )
        with archive.open(info) as file:
            text = file.read(MAX_REQUIREMENTS_BYTES + 1).decode("utf-8", errors="replace")
    parse_requirements(text)


def checked_upload(form: dict[str, bytes]) -> tuple[Manifest, bytes]:
    """The manifest and the model zip of an upload, each checked (4xx naming the field)."""
    manifest = _check_manifest(form_field(form, "manifest"))
    zip_bytes = form_field(form, "model_definition")
    limits = ZipLimits.from_settings(current_services().settings)
    try:
        check_zip(zip_bytes, limits)
        _check_requirements(zip_bytes)
    except (ModelZipError, RequirementsError) as exc:
        raise ApiError(
            400, f"model_definition: {exc}", field="model_definition", code="C102"
        ) from None
    return manifest, zip_bytes


def sealed(manifest: Manifest) -> str:
    try:
        return current_services().box.seal(manifest.secrets())
    except CredentialsError as exc:
        raise ApiError(503, f"service misconfigured: {exc}") from None


@bp.post("")
@authenticated
@contract(
    "Submit a training run",
    tag="models",
    description="Multipart: the model definition (a zip) and its manifest (YAML, as a "
    "file or a plain form field). The run is queued by its resource size.",
    body={
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": obj(
                    {
                        "manifest": {
                            "type": "string",
                            "format": "binary",
                            "description": "The manifest, YAML",
                        },
                        "model_definition": {
                            "type": "string",
                            "format": "binary",
                            "description": "The model definition, a .zip",
                        },
                    }
                ),
                "encoding": {"model_definition": {"contentType": "application/zip"}},
            }
        },
    },
    ok={
        201: json_response(
            "Queued (PENDING)",
            ref("Submitted"),
            headers={
                "Location": {"description": "The run's URL path", "schema": {"type": "string"}}
            },
        )
    },
    errors=(400, 413, 422, 429),
)
def submit():
    services = current_services()
    settings = services.settings
    user = caller().user
    form = read_form(
        {"manifest": settings.max_manifest_bytes, "model_definition": settings.max_zip_bytes}
    )
    manifest, zip_bytes = checked_upload(form)

    run_id = new_run_id()
    while services.runs.exists(run_id):
        run_id = new_run_id()
    run = new_run(settings, user, manifest, sealed(manifest), run_id)
    quota = Quota(
        services.tokens.policy(user, "max_queued", settings.max_queued_per_user),
        services.tokens.policy(user, "max_active", settings.max_active_per_user),
    )
    try:
        queue_run(services.runs, services.artifacts, services.celery, run, zip_bytes, quota)
    except StorageError as exc:
        raise ApiError(503, f"the artifact store is unavailable: {exc}") from None
    except QuotaExceeded as exc:
        raise ApiError(
            429, str(exc), code="quota", retry_after=settings.quota_retry_after_seconds
        ) from None
    except redis.RedisError:
        raise
    except Exception as exc:
        raise ApiError(503, f"could not queue the run: {type(exc).__name__}") from None
    audit("run.submit", run_id, resource=manifest.resource.value)
    response = jsonify({"model_id": run_id, "location": run_location(run_id)})
    response.status_code = 201
    response.headers["Location"] = run_location(run_id)
    return response


@bp.get("")
@authenticated
@contract(
    "List the user's runs (or every user's, `all=true`), newest first",
    tag="models",
    description="`state`, `name` and `experiment` keep only the runs that match each one given "
    "(all of them); `total` and `next_offset` count those.",
    params=[
        LIMIT.parameter(),
        OFFSET.parameter(),
        query_param(
            "all", "Every user's runs (admins only)", {"type": "string", "enum": ["true", "false"]}
        ),
        query_param(
            "state",
            "Only the runs in this state",
            {"type": "string", "enum": [s.value for s in RunState]},
        ),
        query_param(
            "name", "Only the runs whose name contains this, in any case", {"type": "string"}
        ),
        query_param(
            "experiment", "Only the trials of this experiment (its id)", {"type": "string"}
        ),
    ],
    ok={200: json_response("One page of runs", ref("RunList"))},
    errors=(400, 403),
)
def list_runs():
    """The caller's runs; `?all=true` every user's (admins); filtered by `state`, `name`,
    `experiment`."""
    services = current_services()
    principal = caller()
    limit = LIMIT.read()
    offset = OFFSET.read()
    every = request.args.get("all", "false")
    if every not in ("true", "false"):
        raise ApiError(400, "all: expected true or false", field="all")
    state = request.args.get("state")
    try:
        where = RunFilter(
            state=RunState(state) if state is not None else None,
            name=request.args.get("name", ""),
            experiment=request.args.get("experiment", ""),
        )
    except ValueError:
        states = ", ".join(s.value for s in RunState)
        raise ApiError(400, f"state: expected one of {states}", field="state") from None
    if every == "true":
        ensure_admin(principal, "listing every user's runs")
        runs, total = services.runs.list_all(offset, limit, where)
    else:
        runs, total = services.runs.list_for_user(principal.user, offset, limit, where)
    return jsonify(
        {
            "models": [run_summary(r) for r in runs],
            "total": total,
            "offset": offset,
            "limit": limit,
            "next_offset": offset + len(runs) if offset + len(runs) < total else None,
        }
    )


def own_run(run_id: str) -> Run:
    """The run, if the caller may see it (under `@authenticated`); 404 otherwise."""
    principal = caller()
    run = current_services().runs.get(run_id) if is_run_id(run_id) else None
    # Another user's run answers exactly like a missing one (admins see every run).
    if run is None or (run.user != principal.user and not principal.admin):
        raise ApiError(404, f"no training run {run_id!r}")
    return run


@bp.get("/<run_id>")
@authenticated
@contract(
    "Show a run: state, history, usage, where its results go",
    tag="models",
    params=[RUN_ID],
    ok={200: json_response("The run", ref("RunDetail"))},
    errors=(404,),
)
def show(run_id: str):
    services = current_services()
    run = own_run(run_id)
    metrics = live_summaries(services.redis, run)
    detail = run_detail(run, services.runs.history(run_id), metrics)
    detail["waiting"] = None
    if run.state is RunState.PENDING:
        place = WaitList(services.redis).place(run.id, run.resource)
        wait = explain_wait(run, place, services.nodes.list())
        detail["waiting"] = wait.to_dict()
        detail["status_message"] = wait.message
    return jsonify(detail)


@bp.patch("/<run_id>")
@authenticated
@contract(
    'Cancel a run: `{"status": "halt"}`',
    tag="models",
    params=[RUN_ID],
    body=json_body(ref("HaltRequest")),
    ok={
        200: json_response("Halted (it had not started)", ref("Halted")),
        202: json_response("Halting: its worker stops it", ref("Halted")),
    },
    errors=(400, 404, 409),
)
def patch(run_id: str):
    """`{"status": "halt"}` cancels the run."""
    run = own_run(run_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) != {"status"}:
        raise ApiError(400, 'expected a JSON body {"status": "halt"}', field="status")
    if body["status"] != "halt":
        raise ApiError(
            400, f"status: only 'halt' is supported, got {body['status']!r}", field="status"
        )
    cancelled = _cancel(run, delete=False)
    audit("run.cancel", run_id, owner=run.user, state=cancelled.state.value)
    if cancelled.state.terminal and run.artifact:
        current_services().artifacts.delete(run.artifact)  # it never started: no worker needs it
    return jsonify(
        {
            "model_id": run_id,
            "state": cancelled.state.value,
            "message": "halted" if cancelled.state.terminal else "halting",
        }
    ), (200 if cancelled.state.terminal else 202)


def _cancel(run: Run, delete: bool) -> Run:
    try:
        return current_services().runs.request_cancel(run.id, caller().user, delete=delete)
    except InvalidTransition as exc:
        raise ApiError(409, str(exc), code="ended") from None
    except RunNotFound:
        raise ApiError(404, f"no training run {run.id!r}") from None


@bp.post("/<run_id>/store")
@authenticated
@contract(
    "Ask the node that kept a run's results (it ended FAILED S303: they could not be stored) "
    "to store them in its results bucket again",
    tag="models",
    params=[RUN_ID],
    ok={202: json_response("Asked: the run's `kept_results` follows it", ref("StoreRequested"))},
    errors=(404, 409),
)
def store_again(run_id: str):
    """The run's owner (or an admin) asks; its node's worker stores the results with the
    run's own credentials and the run's `kept_results` says how it went. 409 when nothing is
    kept, a request is under way, or the node is not up (the files wait on it)."""
    services = current_services()
    run = own_run(run_id)
    node, state = run.kept_results.get("node"), run.kept_results.get("state")
    live = {n["name"] for n in services.nodes.list() if n["status"] != "lost"}
    if state in ("kept", "failed") and node not in live:
        raise ApiError(
            409,
            f"{run_id}: its results are kept on {node} at {run.kept_results.get('path')}, "
            f"and {node} is not up: start its worker again, then ask again",
            code="node_down",
        )
    try:
        asked = services.runs.request_store_again(run_id, caller().user)
    except NotKept as exc:
        raise ApiError(409, str(exc), code="not_kept") from None
    except RunNotFound:
        raise ApiError(404, f"no training run {run_id!r}") from None
    audit("run.store_again", run_id, owner=run.user, node=node)
    return jsonify(
        {
            "model_id": run_id,
            "node": asked.kept_results["node"],
            "state": "requested",
            "message": f"asked {asked.kept_results['node']} to store the results it kept again",
        }
    ), 202


@bp.delete("/<run_id>")
@authenticated
@contract(
    "Delete a run from the service (never its outputs in the user's bucket)",
    tag="models",
    params=[RUN_ID],
    ok={
        200: json_response("Deleted", ref("Deleted")),
        202: json_response(
            "An active run: cancelled first, removed once it has stopped", ref("Deleted")
        ),
    },
    errors=(404, 409),
)
def delete(run_id: str):
    """Removes the run from the service (never the outputs in the user's bucket). An active
    run is cancelled first, and its record goes once its worker has stopped it (202)."""
    services = current_services()
    run = own_run(run_id)
    if not run.state.terminal:
        cancelled = _cancel(run, delete=True)
        if not cancelled.state.terminal:
            audit("run.delete", run_id, owner=run.user, state=cancelled.state.value)
            return jsonify(
                {
                    "model_id": run_id,
                    "deleted": False,
                    "message": "cancelling; the run is removed once it has stopped",
                }
            ), 202
    # Atomic with a worker's claim: a PENDING run's queued message then finds no record.
    services.runs.delete(run_id, run.user)
    if run.artifact:
        services.artifacts.delete(run.artifact)
    audit("run.delete", run_id, owner=run.user, state="deleted")
    return jsonify({"model_id": run_id, "deleted": True})
