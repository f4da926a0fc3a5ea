"""The framework registry as the API serves it (`GET /v3/frameworks`, `dlaas frameworks`), read
once by the app factory; the nodes holding each version built, from their heartbeat records;
a model zip's requirements.txt checked at submission; a run's environment in `show`."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import redis
import requests
from cryptography.fernet import Fernet

from api.app import create_app
from api.cli import main
from api.client import DlaasClient
from common.fleet.nodes import NodeStore
from common.frameworks import RegistryError
from common.settings import Settings
from deploy.processes import api_argv, free_port
from tests.api.test_openapi import CHECKS, schema
from tests.conftest import BIN, ROOT, make_zip, manifest_yaml

integration = pytest.mark.integration

CUSTOM_REGISTRY = """
python:
  versions:
    "3.11": {python: "3.11"}
acme:
  note: a framework only this registry has
  versions:
    "1.0": {python: "3.11", packages: ["acme==1.0"], note: the first}
"""


def _settings(home: Path, **extra) -> Settings:
    return Settings(home=home, secret_key=Fernet.generate_key().decode(), **extra)


# -- the app factory -------------------------------------------------------------------------


def test_the_app_reads_the_registry_once_and_a_bad_one_stops_it_naming_the_file(tmp_path):
    good = tmp_path / "frameworks.yaml"
    good.write_text(CUSTOM_REGISTRY)
    app = create_app(_settings(tmp_path, frameworks_file=good), redis_client=redis.Redis(port=1))
    registry = app.extensions["dlaas"].frameworks
    assert registry.source == good and set(registry.frameworks) == {"python", "acme"}
    # None: the built-in registry.
    app = create_app(_settings(tmp_path), redis_client=redis.Redis(port=1))
    assert app.extensions["dlaas"].frameworks.get("pytorch", "2.13") is not None

    bad = tmp_path / "bad.yaml"
    for text, says in (
        ("pytorch: {versions: {'2.13': {packages: [torch]}}}", "python: required"),
        ("pytorch: {versions: {'2.13': {python: '3.11', packages: ['torch ==']}}}", "torch =="),
        ("- a list", "expected a mapping"),
    ):
        bad.write_text(text)
        with pytest.raises(RegistryError, match=says) as refused:
            create_app(_settings(tmp_path, frameworks_file=bad), redis_client=redis.Redis(port=1))
        assert str(bad) in str(refused.value)
    with pytest.raises(RegistryError, match="cannot read"):
        missing = tmp_path / "missing.yaml"
        create_app(_settings(tmp_path, frameworks_file=missing), redis_client=redis.Redis(port=1))


@integration
def test_gunicorn_with_a_bad_registry_stops_with_one_line_naming_the_file(stack, tmp_path):
    bad = tmp_path / "frameworks.yaml"
    bad.write_text("pytorch: {versions: {'2.13': {python: '3.11', colour: red}}}\n")
    done = subprocess.run(
        api_argv(BIN, free_port(), workers=1),
        env=dict(stack.env, DLAAS_FRAMEWORKS_FILE=str(bad)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"dlaas-api: {bad}: pytorch.2.13: unknown field 'colour'" in done.stderr
    assert "Traceback" not in done.stderr


# -- GET /v3/frameworks ----------------------------------------------------------------------


def _frameworks(url: str, stack, user: str = "alice") -> dict:
    answer = requests.get(f"{url}/v3/frameworks", headers=stack.headers(user), timeout=10)
    assert answer.status_code == 200, answer.text
    schema["/v3/frameworks"]["GET"].Case().validate_response(answer, checks=CHECKS)
    return answer.json()


def _version(listing: dict, name: str, version: str) -> dict:
    (framework,) = [f for f in listing["frameworks"] if f["name"] == name]
    (found,) = [v for v in framework["versions"] if v["version"] == version]
    return found


@integration
def test_frameworks_lists_the_registry_with_packages_and_why_not(api_url, stack):
    listing = _frameworks(api_url, stack, user="bob")  # any user
    pytorch = _version(listing, "pytorch", "2.13")
    assert pytorch["python"] == "3.11" and pytorch["available"] is True
    assert pytorch["packages"] == []
    assert pytorch["variants"] == {"cpu": ["torch==2.13.0+cpu"], "gpu": ["torch==2.13.0"]}
    caffe = _version(listing, "caffe", "1.0-py3")
    assert caffe["available"] is False and caffe["nodes"] == []
    assert "Caffe is not a Python package" in caffe["unavailable"]
    assert _version(listing, "pytorch", "2.x")["note"].startswith("the newest 2.x")


@integration
def test_frameworks_needs_a_token(api_url):
    assert requests.get(f"{api_url}/v3/frameworks", timeout=5).status_code == 401
    answer = requests.get(
        f"{api_url}/v3/frameworks", headers={"Authorization": "Bearer nope"}, timeout=5
    )
    assert answer.status_code == 401 and answer.json()["error"]["message"] == "invalid token"


@integration
def test_nodes_are_the_live_ones_whose_heartbeat_holds_the_version_built(api_url, stack):
    nodes = NodeStore(stack.redis.client(0))
    name = f"fake-{secrets.token_hex(3)}@test"
    built = {
        "key": "a" * 20,
        "framework": "pytorch",
        "version": "2.13",
        "accelerator": "gpu",
        "python": "3.11.9",
        "requirements": 2,
        "bytes": 123,
    }
    try:
        nodes.heartbeat(name, {"sizes": ["small"], "accelerator": "gpu", "environments": [built]})
        listing = _frameworks(api_url, stack)
        assert name in _version(listing, "pytorch", "2.13")["nodes"]
        assert name not in _version(listing, "pytorch", "2.x")["nodes"]  # the exact version
        assert {"name": name, "status": "ready", "accelerator": "gpu"} in listing["live_nodes"]

        nodes.request_drain(name)  # a draining node still holds it
        assert name in _version(_frameworks(api_url, stack), "pytorch", "2.13")["nodes"]

        # Its record expires: lost, and what it last said no longer counts.
        NodeStore(stack.redis.client(0), heartbeat_ttl_seconds=0.2).heartbeat(
            name, {"accelerator": "gpu", "environments": [built]}
        )
        time.sleep(0.4)
        listing = _frameworks(api_url, stack)
        assert name not in _version(listing, "pytorch", "2.13")["nodes"]
        assert name not in {n["name"] for n in listing["live_nodes"]}
    finally:
        nodes.forget(name)


@integration
def test_an_operators_registry_is_what_the_api_offers_and_checks(stack, tmp_path):
    registry = tmp_path / "frameworks.yaml"
    registry.write_text(CUSTOM_REGISTRY)
    # Database 4: no worker consumes its queues, so what it accepts stays PENDING.
    with stack.api(
        "api-registry", DLAAS_FRAMEWORKS_FILE=str(registry), DLAAS_REDIS_URL=stack.redis.url(4)
    ) as url:
        listing = _frameworks(url, stack)
        assert [f["name"] for f in listing["frameworks"]] == ["python", "acme"]
        assert _version(listing, "acme", "1.0")["packages"] == ["acme==1.0"]
        refused = _submit(url, stack, framework=("pytorch", "2.13"))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "C101" and "unknown framework 'pytorch'" in error["message"]
        assert _submit(url, stack, framework=("acme", "1.0")).status_code == 201


# -- requirements.txt at submission ----------------------------------------------------------


@pytest.fixture(scope="module")
def quiet_api(stack):
    """An API of the stack on Redis database 4: no worker takes what it accepts."""
    with stack.api("api-requirements", DLAAS_REDIS_URL=stack.redis.url(4)) as url:
        requests.get(f"{url}/health", timeout=10).raise_for_status()
        yield url


def _submit(url, stack, files=None, framework=("python", "3.11")):
    files = files if files is not None else {"train.py": "print(1)\n"}
    return requests.post(
        f"{url}/v3/models",
        files={
            "model_definition": ("model.zip", make_zip(files), "application/zip"),
            "manifest": ("manifest.yml", manifest_yaml(framework=framework)),
        },
        headers=stack.headers(),
        timeout=10,
    )


def _footprint(stack) -> dict:
    r = stack.redis.client(4)
    return {
        "runs": sorted(r.scan_iter("dlaas:run:*")),
        "artifacts": sorted(p.name for p in stack.artifact_dir.glob("*"))
        if stack.artifact_dir.exists()
        else [],
        "queued": {q: r.llen(q) for q in ("dlaas.small", "dlaas.medium", "dlaas.large")},
    }


# A 1.2 MB file of comments, barely compressible (the zip's ratio check passes it).
LONG = "".join(f"# {secrets.token_hex(32)}\n" for _ in range(18_000))


@integration
@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        (
            "requirements.txt",
            "numpy==1.26.4\n--index-url http://x\n",
            "requirements.txt line 2: options such as '--index-url' are not accepted",
        ),
        (
            "requirements.txt",
            "# ours\n\nfoo @ https://x/foo.whl\n",
            "requirements.txt line 3: foo names a URL",
        ),
        ("requirements.txt", "not a req !!\n", "requirements.txt line 1: 'not a req !!'"),
        ("./requirements.txt", "-e .\n", "requirements.txt line 1: options such as '-e'"),
        ("requirements.txt", LONG, "requirements.txt: 1206000 bytes, larger than the limit"),
    ],
)
def test_a_bad_requirements_line_is_refused_naming_it_and_nothing_is_left(
    quiet_api, stack, name, text, says
):
    before = _footprint(stack)
    answer = _submit(quiet_api, stack, files={"train.py": "print(1)\n", name: text})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["message"].startswith(f"model_definition: {says}"), error["message"]
    assert (error["field"], error["code"]) == ("model_definition", "C102")
    assert _footprint(stack) == before


@integration
def test_good_requirements_and_one_not_at_the_top_are_accepted(quiet_api, stack):
    good = '# pinned\nnumpy==1.26.4  # arrays\n\nrequests>=2.31 ; python_version >= "3.9"\n'
    answer = _submit(quiet_api, stack, files={"train.py": "print(1)\n", "requirements.txt": good})
    assert answer.status_code == 201, answer.text
    # Only the top-level file is the run's (the worker reads no other).
    answer = _submit(
        quiet_api, stack, files={"train.py": "print(1)\n", "sub/requirements.txt": "-r x.txt\n"}
    )
    assert answer.status_code == 201, answer.text


# -- against real workers: a run's environment, the node holding it, the CLI -----------------


def _cli(url: str, stack, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv), client=DlaasClient(url, stack.tokens["alice"]))
    return code, out.getvalue()


@integration
def test_a_run_shows_its_environment_and_its_node_holds_it_built(api_url, stack, workers):
    stack.bucket("data")
    stack.bucket("results")
    run_id = stack.submit(manifest_yaml(command="python -c 'print(42)'"))
    shown = stack.wait_ended(run_id, timeout=300)
    assert shown["state"] == "COMPLETED", shown
    answer = requests.get(f"{api_url}/v3/models/{run_id}", headers=stack.headers(), timeout=10)
    case = schema["/v3/models/{run_id}"]["GET"].Case(path_parameters={"run_id": run_id})
    case.validate_response(answer, checks=CHECKS)  # as RunDetail documents it
    env = shown["environment"]
    assert env["framework"] == "python 3.11" and env["python"].startswith("3.11")
    assert env["status"] in ("built", "reused") and env["requirements"] == 0
    assert len(env["key"]) == 20

    code, out = _cli(api_url, stack, "show", "trained-models", run_id)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith("Environment")]
    assert row == (
        f"{'Environment':<15}python 3.11, Python {env['python']} ({env['accelerator']}): "
        f"{env['status']} in {env['seconds']:.2f} s, key {env['key']}"
    )

    # The worker's next heartbeat names what its cache holds.
    deadline = time.monotonic() + 15
    while workers["small"] not in _version(_frameworks(api_url, stack), "python", "3.11")["nodes"]:
        assert time.monotonic() < deadline, "the worker's heartbeat never named python 3.11"
        time.sleep(0.5)
    listing = _frameworks(api_url, stack)
    (small,) = [n for n in listing["live_nodes"] if n["name"] == workers["small"]]
    assert small["accelerator"] in ("cpu", "gpu")

    code, out = _cli(api_url, stack, "frameworks")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["framework", "version", "python", "packages", "built", "on"]
    by_version = {tuple(line.split()[:2]): line for line in lines[1:] if line.strip()}
    assert f"{workers['small']} ({small['accelerator']})" in by_version[("python", "3.11")]
    assert "torch==2.13.0+cpu (cpu) / torch==2.13.0 (gpu)" in by_version[("pytorch", "2.13")]
    assert by_version[("pytorch", "2.5")].split()[3] == "torch==2.5.1"
    assert by_version[("caffe", "1.0-py3")].endswith(
        "unavailable: Caffe is not a Python package (no PyPI release); this service does not "
        "build it"
    )
    assert "  pytorch 2.x: the newest 2.x this service has vetted (2.13.0)" in lines
    assert lines[-1] == "OK"

    code, out = _cli(api_url, stack, "frameworks", "--json")
    assert code == 0
    answer = json.loads(out)
    assert workers["small"] in _version(answer, "python", "3.11")["nodes"]
