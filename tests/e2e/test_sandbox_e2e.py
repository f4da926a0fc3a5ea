"""A worker started with DLAAS_SANDBOX=bwrap, as a real dlaas-worker process: it says so at
start, its node record and `dlaas nodes` show it, and its run's command sees its own
processes only (worker/sandbox.py; the properties one by one: tests/worker/test_sandbox.py)."""

from __future__ import annotations

import shutil

import pytest
import requests

from tests.conftest import manifest_yaml, unstamped
from tests.e2e.test_cli_e2e import dlaas

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]


def test_a_sandboxed_worker_says_so_and_runs_its_runs_in_the_sandbox(stack, workers):
    stack.bucket("data")
    results = stack.bucket("results")
    name = "sandboxed@test"
    worker = stack.start_worker(name, "4,5,6,7", DLAAS_SANDBOX="bwrap")
    try:
        said = (stack.home / "logs" / f"{name}.log").read_text()
        assert f"dlaas-worker {name}: sandbox: bubblewrap (" in said
        nodes = requests.get(
            f"{stack.api_url}/v3/nodes", headers=stack.headers(), timeout=10
        ).json()["nodes"]
        (node,) = [n for n in nodes if n["name"] == name]
        assert node["isolation"]["sandbox"] is True
        assert node["isolation"]["detail"].startswith("bubblewrap (")
        listed = dlaas(stack, "nodes").stdout.splitlines()
        (row,) = [line.split() for line in listed if line.startswith(name + " ")]
        assert row[5] == "bwrap"
        command = (
            "ps -e -o comm=; echo ---; ls -A /tmp; echo ---; echo $RESULT_DIR $VIRTUAL_ENV; "
            "echo $PYTHONPATH | tr : ' '"
        )
        run_id = stack.submit(manifest_yaml(command, resource="large"))
        done = stack.wait_ended(run_id)
        assert done["state"] == "COMPLETED" and done["worker"] == name, done["status_message"]
        log = unstamped((results / run_id / "learner-1" / "training-log.txt").read_text())
        processes, in_tmp, given = (part.split() for part in log.split("---\n"))
        assert set(processes) <= {"bwrap", "bash", "ps"}, log  # nothing of the node
        # Its own /tmp: nothing but the way to the folders it was given (its run folder, its
        # environment, the worker's runtime folder on its PYTHONPATH), when under /tmp.
        assert all(any(p.startswith(f"/tmp/{entry}/") for p in given) for entry in in_tmp), log
    finally:
        stack.stop(worker)
