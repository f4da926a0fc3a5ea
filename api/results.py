"""A run's results, through the service: `GET /v3/models/<id>/results` lists the files in its
results folder (what the run wrote to RESULT_DIR, its logs and metrics under `learner-1/`, its
submitted code), `GET /v3/models/<id>/results/<path>` streams one of them from the results
store, whatever its type (local, S3, Swift), with the run's own sealed credentials. A user
reaches only their own runs (another's answers 404, as a missing one does).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from flask import Blueprint, Response, jsonify, stream_with_context

from api.auth import audit, authenticated
from api.errors import ApiError
from api.logs import results_store
from api.models import RUN_ID, own_run
from api.openapi import contract, json_response, path_param, ref
from common.layout import run_key
from common.run import Run
from common.storage import StorageError

bp = Blueprint("results", __name__, url_prefix="/v3/models")

RESULT_PATH = path_param(
    "path", "A file's path in the run's results folder, as the listing gives it", {"type": "string"}
)


def _unreachable(run: Run, exc: StorageError) -> ApiError:
    """A results store that refuses or cannot be reached: the user's to fix, or try later."""
    if exc.user_fault:
        return ApiError(409, f"{run.id}: its results store refused: {exc}", code="results_store")
    return ApiError(503, f"{run.id}: its results store is unreachable: {exc}")


@bp.get("/<run_id>/results")
@authenticated
@contract(
    "The files in the run's results folder",
    tag="models",
    params=[RUN_ID],
    ok={200: json_response("Its result files", ref("ResultList"))},
    errors=(404, 409),
)
def listing(run_id: str):
    run = own_run(run_id)
    store, results = results_store(run)
    prefix = run_key(run.id, "")
    try:
        objects = store.list(results.bucket, prefix)
    except StorageError as exc:
        if exc.user_fault and not run.state.terminal:
            objects = []  # nothing stored yet: the bucket may not even exist before the end
        else:
            raise _unreachable(run, exc) from None
    files = [{"path": o.key[len(prefix) :], "size": o.size} for o in objects]
    return jsonify(
        {
            "model_id": run.id,
            "state": run.state.value,
            "results_location": {
                "type": results.type.value,
                "bucket": results.bucket,
                "prefix": prefix,
            },
            "files": files,
            "total_bytes": sum(f["size"] for f in files),
        }
    )


@bp.get("/<run_id>/results/<path:path>")
@authenticated
@contract(
    "One result file's bytes, streamed from the run's results store",
    tag="models",
    params=[RUN_ID, RESULT_PATH],
    ok={
        200: {
            "description": "The file, as stored",
            "headers": {
                "Content-Length": {"schema": {"type": "integer"}, "description": "Its size"}
            },
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
    errors=(400, 404, 409),
)
def download(run_id: str, path: str):
    run = own_run(run_id)
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or any(p in (".", "..") for p in parts):
        raise ApiError(400, f"path: {path!r} is not a file of the results folder", field="path")
    store, results = results_store(run)
    try:
        size, chunks = store.stream(results.bucket, run_key(run.id, path))
    except StorageError as exc:
        if exc.user_fault and _missing(store, results.bucket, run_key(run.id, path)):
            raise ApiError(404, f"{run.id} has no result file {path!r}", field="path") from None
        raise _unreachable(run, exc) from None
    audit("run.download", run.id, owner=run.user, path=path, size=size)
    name = parts[-1].replace('"', "")
    return Response(
        stream_with_context(_guarded(chunks)),
        mimetype="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


def _missing(store, bucket: str, key: str) -> bool:
    """Whether the store, asked again, has no such object (rather than refusing us)."""
    try:
        return all(o.key != key for o in store.list(bucket, key))
    except StorageError:
        return False


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The file's chunks; a store failing mid-file ends the body short, which the client
    sees against Content-Length (the status line has already gone)."""
    try:
        yield from chunks
    except StorageError:
        return
