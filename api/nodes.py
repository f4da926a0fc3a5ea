"""`/v3/nodes`: the fleet's workers, and draining one (admins only)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from api.auth import audit, current_user, require_admin
from api.errors import ApiError
from common.sizes import ResourceSize, queue_name

bp = Blueprint("nodes", __name__, url_prefix="/v3/nodes")


@bp.get("")
def list_nodes():
    services = current_app.extensions["dlaas"]
    current_user()
    return jsonify({"nodes": services.nodes.list()})


@bp.post("/<name>/drain")
def drain(name: str):
    """The worker takes no new run; its running run finishes. It stays up (undrain by
    restarting it)."""
    services = current_app.extensions["dlaas"]
    require_admin("draining nodes")
    known = {n["name"]: n for n in services.nodes.list()}
    if name not in known or known[name]["status"] == "lost":
        raise ApiError(404, f"no live node {name!r}")
    services.nodes.request_drain(name)
    # Stop its consumers too, so no message even reaches it (a worker that still gets
    # one while draining puts it back on its queue).
    for size in known[name].get("sizes", []):
        services.celery.control.cancel_consumer(
            queue_name(ResourceSize(size)), destination=[name], reply=False
        )
    audit("node.drain", name)
    return jsonify({"name": name, "status": "draining"}), 202
