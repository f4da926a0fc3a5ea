"""`/v3/frameworks`: what a manifest may name (the framework registry), and which live nodes
hold each version's environment built already."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.auth import authenticated
from api.openapi import contract, json_response, ref
from api.services import current_services

bp = Blueprint("frameworks", __name__, url_prefix="/v3/frameworks")

LIVE = ("ready", "draining")  # a lost node's last record says nothing about now


def built_on(nodes: list[dict]) -> dict[tuple[str, str], list[str]]:
    """(framework name, version) -> the live nodes whose cache holds an environment for it,
    whatever its requirements, from their heartbeat records."""
    held: dict[tuple[str, str], list[str]] = {}
    for node in nodes:
        if node.get("status") not in LIVE:
            continue
        for env in node.get("environments") or []:
            if not isinstance(env, dict):
                continue
            names = held.setdefault((str(env.get("framework")), str(env.get("version"))), [])
            if node["name"] not in names:
                names.append(node["name"])
    return held


@bp.get("")
@authenticated
@contract(
    "The frameworks a manifest may name: each version's Python, packages, whether the service "
    "builds it, and the live nodes holding it built",
    tag="frameworks",
    ok={200: json_response("The framework registry, and the fleet", ref("FrameworkList"))},
)
def list_frameworks():
    services = current_services()
    nodes = services.nodes.list()
    held = built_on(nodes)
    frameworks = services.frameworks.listing()
    for framework in frameworks:
        for version in framework["versions"]:
            version["nodes"] = sorted(held.get((framework["name"], version["version"]), []))
    live = [
        {"name": n["name"], "status": n["status"], "accelerator": n.get("accelerator")}
        for n in nodes
        if n.get("status") in LIVE
    ]
    return jsonify({"frameworks": frameworks, "live_nodes": live})
