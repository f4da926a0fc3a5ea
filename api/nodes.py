"""`/v3/nodes`: the fleet's workers, and draining one (admins only); `/v3/queues`: the runs
waiting on each size's queue."""

from __future__ import annotations

import math

from flask import Blueprint, jsonify

from api.auth import admin_only, audit, authenticated, caller
from api.errors import ApiError
from api.openapi import contract, json_response, path_param, ref
from api.params import IntArg
from api.services import current_services
from common.fleet.sizes import ResourceSize, queue_name
from common.fleet.waitlist import WaitList

bp = Blueprint("nodes", __name__, url_prefix="/v3/nodes")
queues_bp = Blueprint("queues", __name__, url_prefix="/v3/queues")


@bp.get("")
@authenticated
@contract(
    "The fleet's workers: ready, draining or lost",
    tag="nodes",
    ok={200: json_response("Every node seen lately", ref("NodeList"))},
)
def list_nodes():
    return jsonify({"nodes": current_services().nodes.list()})


@bp.post("/<name>/drain")
@admin_only("draining nodes")
@contract(
    "Drain a worker: it takes no new run; its running run finishes (admins only)",
    tag="nodes",
    params=[path_param("name", "The worker's name")],
    ok={202: json_response("Draining", ref("Draining"))},
    errors=(404,),
)
def drain(name: str):
    """The worker takes no new run; its running run finishes. It stays up (undrain lifts
    it)."""
    node = _live_node(name)
    current_services().nodes.request_drain(name)
    # Stop its consumers too, so no message even reaches it (a worker that still gets
    # one while draining puts it back on its queue).
    _consume(node, False)
    audit("node.drain", name)
    return jsonify({"name": name, "status": "draining"}), 202


@bp.post("/<name>/undrain")
@admin_only("undraining nodes")
@contract(
    "Lift a drain: the worker takes runs again (admins only)",
    tag="nodes",
    params=[path_param("name", "The worker's name")],
    ok={200: json_response("Ready", ref("Undrained"))},
    errors=(404, 409),
)
def undrain(name: str):
    """The worker takes new runs again; not one that is shutting down (SIGTERM set a
    deadline for its run: it is going away)."""
    services = current_services()
    node = _live_node(name)
    deadline = services.nodes.drain_deadline(name)
    if deadline is None:
        raise ApiError(409, f"node {name!r} is not draining", code="not_draining")
    if not math.isinf(deadline):
        stopping = f"node {name!r} is shutting down: it cannot be undrained"
        raise ApiError(409, stopping, code="stopping")
    services.nodes.clear_drain(name)
    _consume(node, True)
    audit("node.undrain", name)
    return jsonify({"name": name, "status": "ready"})


def _live_node(name: str) -> dict:
    """The node's record, if it is up (draining included); 404 otherwise."""
    node = current_services().nodes.record(name)
    if node is None:
        raise ApiError(404, f"no live node {name!r}")
    return node


def _consume(node: dict, on: bool) -> None:
    """Start (`on`) or stop the node's consumers of the queues of its sizes."""
    control = current_services().celery.control
    change = control.add_consumer if on else control.cancel_consumer
    for size in node.get("sizes", []):
        change(queue_name(ResourceSize(size)), destination=[node["name"]], reply=False)


QUEUE_LIMIT = IntArg(
    "limit",
    "How many runs of each size's head to list (default 100)",
    default=100,
    low=0,
    high=1000,
)


@queues_bp.get("")
@authenticated
@contract(
    "The runs waiting on each size's queue: how many, and the first `limit` of each in the order "
    "they are served, the caller's own named, other users' counted (admins see every run's name "
    "and owner)",
    tag="nodes",
    params=[QUEUE_LIMIT.parameter()],
    ok={200: json_response("Each size's queue", ref("QueueList"))},
    errors=(400,),
)
def list_queues():
    """Reads the index of waiting runs (its length and head per size) and the head's records:
    the same work with ten runs waiting or ten thousand."""
    principal = caller()
    limit = QUEUE_LIMIT.read()
    services = current_services()
    waitlist = WaitList(services.redis)
    lengths = waitlist.lengths()
    heads = waitlist.heads(ResourceSize, limit)
    records = {
        run.id: run
        for run in services.runs.records([q.run_id for head in heads.values() for q in head])
    }
    queues = []
    for size in ResourceSize:
        listed = []
        for queued in heads[size]:
            run = records.get(queued.run_id)
            if run is None:
                continue  # claimed or deleted since the index was read
            shown = principal.admin or run.user == principal.user
            listed.append(
                {
                    "position": len(listed) + 1,
                    "model_id": run.id if shown else None,
                    "name": run.name if shown else None,
                    "user": run.user if shown else None,
                    "submitted_at": run.submitted_at,
                    "gpu_count": run.gpu_count,
                }
            )
        queues.append({"size": size.value, "pending": lengths[size], "runs": listed})
    return jsonify({"queues": queues})
