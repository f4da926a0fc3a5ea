"""Watching runs and the fleet: /metrics, Flower's view of workers and tasks (and of no
secret), nodes, and a second node joining mid-run."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.processes import free_port, http_ok, wait_until
from tests.conftest import BIN, manifest_yaml

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def scrape(url: str) -> dict[tuple, float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_a_run(stack, workers, api_url):
    stack.bucket("data")
    stack.bucket("results")
    before = scrape(api_url)
    run_id = stack.submit(manifest_yaml("echo measured > $RESULT_DIR/m.txt"))
    assert stack.wait_ended(run_id)["state"] == "COMPLETED"
    after = scrape(api_url)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("dlaas_submissions_total", size="small") == 1
    assert delta("dlaas_runs_ended_total", state="COMPLETED", size="small", error_code="") == 1
    assert delta("dlaas_run_duration_seconds_count", size="small") == 1
    assert delta("dlaas_run_duration_seconds_bucket", size="small", le="10") == 1
    assert delta("dlaas_stored_bytes_total") > 0
    assert after[("dlaas_runs", (("size", "small"), ("state", "PROCESSING")))] == 0
    assert after[("dlaas_queue_length", (("size", "small"),))] == 0
    assert after[("dlaas_nodes", (("status", "ready"),))] == 2
    assert after[("dlaas_gpus", (("state", "free"),))] == 3  # GPU 0, and GPUs 1 and 2


@pytest.fixture(scope="module")
def flower(stack, workers):
    port = free_port()
    password = secrets.token_urlsafe(8)
    url = f"http://127.0.0.1:{port}"
    # As deploy/stack.py starts it: password and broker in its environment, where local
    # users (runs included) cannot read them, not on its command line.
    pid = stack.start(
        [str(BIN / "celery"), "flower", "--address=127.0.0.1", f"--port={port}"],
        "flower",
        lambda: http_ok(f"{url}/healthcheck"),
        CELERY_BROKER_URL=stack.redis.url(0),
        CELERY_RESULT_BACKEND=stack.redis.url(0),
        FLOWER_BASIC_AUTH=f"admin:{password}",
    )
    assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    assert requests.get(f"{url}/workers?json=1", timeout=5).status_code == 401

    def hears_events() -> bool:
        # Flower serves HTTP before its event receiver listens: wait for the workers'
        # heartbeats (events) to show up, or the first tasks' events are missed.
        try:
            answer = requests.get(f"{url}/workers?json=1", auth=("admin", password), timeout=5)
            return workers["small"] in answer.text
        except requests.RequestException:
            return False

    wait_until(hears_events, 60, "flower event receiver")
    yield url, ("admin", password)
    stack.stop(pid)


def test_flower_sees_workers_queues_and_tasks_but_no_secret(stack, workers, api_url, flower):
    url, basic = flower
    stack.bucket("data")
    stack.bucket("results")
    assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
    secret = "flower-must-not-see-" + secrets.token_hex(8)
    manifest = (FIXTURES / "seed-s3-manifest.yml").read_text()
    manifest = manifest.replace(
        "aws_secret_access_key: <password>", f"aws_secret_access_key: {secret}"
    )
    leaky = stack.submit(manifest)  # "<auth-url>" is no endpoint: the run fails
    run_id = stack.submit(manifest_yaml("echo seen by flower; sleep 4"))
    # While it runs, Flower shows its progress: the task view a custom PROGRESS state, the
    # result view the run's own state.
    listed_states, result_states = set(), set()
    deadline = time.monotonic() + 30
    while "SUCCESS" not in listed_states and time.monotonic() < deadline:
        tasks = requests.get(f"{url}/api/tasks", auth=basic, timeout=10).json()
        mine = [t for t in tasks.values() if run_id in (t.get("args") or "")]
        if mine:
            listed_states.add(mine[0]["state"])
            answer = requests.get(
                f"{url}/api/task/result/{mine[0]['uuid']}", auth=basic, timeout=10
            ).json()
            result_states.add(answer.get("state"))
        time.sleep(0.05)
    assert "PROGRESS" in listed_states, listed_states
    assert "PROCESSING" in result_states, result_states
    assert stack.wait_ended(run_id)["state"] == "COMPLETED"
    # The task keeps no result of Celery's own (SUCCESS): its last state is the run's end.
    result_url = f"{url}/api/task/result/{mine[0]['uuid']}"
    wait_until(
        lambda: requests.get(result_url, auth=basic, timeout=10).json().get("state") == "COMPLETED",
        10,
        "the run's end state in Flower's result view",
    )
    assert stack.wait_ended(leaky)["state"] == "FAILED"

    responses = []
    deadline = time.monotonic() + 30
    task = None
    while task is None and time.monotonic() < deadline:
        tasks = requests.get(f"{url}/api/tasks", auth=basic, timeout=10)
        responses.append(tasks.text)
        found = [
            t
            for t in tasks.json().values()
            if run_id in (t.get("args") or "") and t.get("state") == "SUCCESS"
        ]
        task = found[0] if found else None
        time.sleep(0.3)
    assert task is not None, responses[-1][:2000]
    assert task["name"] == "dlaas.run_training"
    assert task["args"] == f"['{run_id}']"
    assert task["result"] == "'COMPLETED'"
    assert task["worker"] == workers["small"]
    info = requests.get(f"{url}/api/task/info/{task['uuid']}", auth=basic, timeout=10)
    responses.append(info.text)
    listed = requests.get(f"{url}/api/workers?refresh=1", auth=basic, timeout=20)
    responses.append(listed.text)
    worker = listed.json()[workers["small"]]
    assert [q["name"] for q in worker["active_queues"]] == ["dlaas.small"]
    for path in (
        "/api/task/types",
        "/api/queues/length",
        "/api/tasks?limit=1000",
        "/workers?json=1",
    ):
        answer = requests.get(f"{url}{path}", auth=basic, timeout=10)
        responses.append(answer.text)
    assert all(secret not in body for body in responses)
    assert any(leaky in body for body in responses)  # its task was there, without the secret


def test_a_second_node_joins_mid_run_and_takes_queued_runs(stack, workers, api_url, tmp_path):
    first = stack.submit(manifest_yaml("sleep 4", resource="medium"))
    queued = [
        stack.submit(manifest_yaml("echo $CUDA_VISIBLE_DEVICES", resource="medium"))
        for _ in range(2)
    ]
    time.sleep(1.0)
    shown = requests.get(f"{api_url}/v3/models/{first}", headers=stack.headers(), timeout=5).json()
    assert shown["state"] == "PROCESSING" and shown["worker"] == workers["medium"]
    pid = stack.start_worker("another-node@test", "5,6")
    try:
        nodes = requests.get(f"{api_url}/v3/nodes", headers=stack.headers(), timeout=5).json()[
            "nodes"
        ]
        mine = {n["name"]: n for n in nodes}
        assert mine[workers["medium"]]["run"] == first
        assert mine["another-node@test"]["gpus"] == [5, 6]
        done = [stack.wait_ended(r) for r in queued]
        assert all(d["state"] == "COMPLETED" for d in done)
        assert "another-node@test" in {d["worker"] for d in done}
        assert stack.wait_ended(first)["state"] == "COMPLETED"
    finally:
        stack.stop(pid)
    nodes = requests.get(f"{api_url}/v3/nodes", headers=stack.headers(), timeout=5).json()["nodes"]
    assert "another-node@test" not in {n["name"] for n in nodes}  # a clean stop leaves
