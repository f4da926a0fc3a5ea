"""The HTTP contract (api/openapi.py, each operation beside its handler): every Flask route has
one, the document is valid, and a fuzzer (schemathesis) finds no 5xx and no answer the document
does not describe."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
import schemathesis
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api.app import create_app
from api.auth import Access
from api.openapi import IGNORED_METHODS, document
from common.settings import Settings
from tests.conftest import make_zip, manifest_yaml

# The dashboard's pages (api/ui.py) are HTML for a browser, not the API: no @contract; the
# browser tests (tests/e2e/test_dashboard.py) cover them.
UI_ENDPOINTS = ("ui.", "ui_root.")

# Examples per operation and generation phase: ~11 operations stay well under a minute.
FUZZ_EXAMPLES = 100
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _app(home):
    settings_ = Settings(home=home, secret_key=Fernet.generate_key().decode())
    # Nothing connects: the app is only built to read its URL map and document it.
    return create_app(settings_, redis_client=redis.Redis(port=1))


def _document() -> dict:
    with tempfile.TemporaryDirectory() as home:
        return document(_app(Path(home)))


def _flask_operations(tmp_path) -> set[tuple[str, str]]:
    app = _app(tmp_path)
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(UI_ENDPOINTS):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(path, method) for method in rule.methods - IGNORED_METHODS}
    return found


def _documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in _document()["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_every_route_is_documented_and_every_documented_operation_exists(tmp_path):
    routes, documented = _flask_operations(tmp_path), _documented_operations()
    assert routes - documented == set(), "routes without a @contract (api/openapi.py)"
    assert documented - routes == set(), "documented, but no such route"


def test_path_parameters_are_declared_and_errors_use_the_one_shape():
    doc = _document()
    for path, item in doc["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, (method, path)
            for status, answer in op["responses"].items():
                if int(status) >= 400 and not (path == "/health" and status == "503"):
                    assert answer == {"$ref": f"#/components/responses/Error{status}"}
            if op["security"]:
                assert {"401", "429"} <= set(op["responses"]), (method, path)
    assert doc["components"]["responses"]["Error429"]["headers"]["Retry-After"]["required"]
    # schemathesis refuses a document that is not valid OpenAPI, or has unresolvable refs.
    schema = schemathesis.openapi.from_dict(_document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_documented_operations())


def test_the_access_rule_above_a_view_is_the_one_documented(tmp_path):
    app = _app(tmp_path)
    doc = document(app)
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or rule.endpoint.startswith(UI_ENDPOINTS):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            op = doc["paths"][path][method.lower()]
            access = getattr(view, "access", None)
            assert bool(op["security"]) == (access is not None), (method, path)
            if access is Access.ADMIN:
                assert "403" in op["responses"], (method, path)


def test_a_route_without_a_contract_is_left_out_so_the_drift_test_names_it(tmp_path):
    app = _app(tmp_path)
    app.add_url_rule("/v3/undocumented", "undocumented", lambda: "")
    assert "/v3/undocumented" not in document(app)["paths"]
    assert "/v3/models" in document(app)["paths"]


# -- against the live API -------------------------------------------------------------------

integration = pytest.mark.integration


@integration
def test_the_document_is_served_without_auth(api_url):
    answer = requests.get(f"{api_url}/openapi.json", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == _document()


@pytest.fixture(scope="module")
def fuzz_api(stack):
    """An API process of the test stack on a Redis database of its own (3): no worker
    consumes its queues, so whatever it accepts stays PENDING, and neither its runs nor
    its rate-limit counters reach the other tests. No rate limit: the fuzzer sends
    hundreds of requests a minute with one token."""
    with stack.api(
        "api-fuzz", DLAAS_REDIS_URL=stack.redis.url(3), DLAAS_REQUESTS_PER_MINUTE="0"
    ) as url:
        requests.get(f"{url}/health", timeout=10).raise_for_status()
        yield url


FUZZ = Counter()  # cases, 5xx
STATUSES = Counter()


@pytest.fixture(scope="module")
def fuzz_summary(request):
    yield FUZZ
    line = (
        f"schemathesis: {FUZZ['cases']} cases over {len(_documented_operations())} operations, "
        f"{FUZZ['5xx']} answered 5xx; statuses {dict(sorted(STATUSES.items()))}"
        if FUZZ
        else "schemathesis: no case ran"
    )
    # Shown even without -s, so the figures can be quoted.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + line)


def _count(status: int) -> None:
    FUZZ["cases"] += 1
    FUZZ["5xx"] += status >= 500
    STATUSES[status] += 1


schema = schemathesis.openapi.from_dict(_document())


@integration
@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_fuzzed_requests_get_no_5xx_and_answers_the_document_describes(
    case, fuzz_api, stack, fuzz_summary
):
    # Always a valid token (alice, an admin), so the fuzzer gets past auth to the handlers.
    headers = {"Authorization": f"Bearer {stack.tokens['alice']}"}
    response = case.call(base_url=fuzz_api, headers=headers, timeout=10)
    _count(response.status_code)
    case.validate_response(response, checks=CHECKS, headers=headers)


@integration
def test_success_paths_answer_as_documented(fuzz_api, stack):
    """What the fuzzer rarely reaches (it cannot guess a run id nor build a valid zip): a run
    submitted, listed, shown, its log read, halted twice, deleted; nodes; no token."""
    alice = {"Authorization": f"Bearer {stack.tokens['alice']}"}
    bob = {"Authorization": f"Bearer {stack.tokens['bob']}"}

    def check(method: str, path: str, response: requests.Response, **parts) -> None:
        case = schema[path][method].Case(**parts)
        case.validate_response(response, checks=CHECKS)

    files = {
        "model_definition": ("model.zip", make_zip({"train.py": "print(1)\n"}), "application/zip"),
        "manifest": ("manifest.yml", manifest_yaml(command="echo never runs")),
    }
    answer = requests.post(f"{fuzz_api}/v3/models", files=files, headers=alice, timeout=10)
    assert answer.status_code == 201, answer.text
    check("POST", "/v3/models", answer)
    run_id = answer.json()["model_id"]
    one = {"path_parameters": {"run_id": run_id}}

    answer = requests.get(f"{fuzz_api}/v3/models?limit=1", headers=alice, timeout=10)
    assert answer.status_code == 200 and answer.json()["models"][0]["model_id"] == run_id
    check("GET", "/v3/models", answer)
    answer = requests.get(f"{fuzz_api}/v3/models?all=true", headers=bob, timeout=10)
    assert answer.status_code == 403
    check("GET", "/v3/models", answer)
    answer = requests.get(f"{fuzz_api}/v3/models/{run_id}", headers=alice, timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == "PENDING"
    check("GET", "/v3/models/{run_id}", answer, **one)
    answer = requests.get(f"{fuzz_api}/v3/models/{run_id}/logs", headers=alice, timeout=10)
    assert answer.status_code == 200
    check("GET", "/v3/models/{run_id}/logs", answer, **one)
    # "²" passes str.isdigit() but not int(): it was a 500.
    for path, query in (
        ("/v3/models", "limit=²"),
        ("/v3/models", "offset=²"),
        ("/v3/models/{run_id}/logs", "since=²"),
    ):
        url = f"{fuzz_api}{path.format(run_id=run_id)}?{query}"
        answer = requests.get(url, headers=alice, timeout=10)
        assert answer.status_code == 400, (query, answer.text)
        check("GET", path, answer, **one if "{" in path else {})
    for body in ([], {"status": 1}, {"status": "halt", "now": True}, "halt", None):
        answer = requests.patch(
            f"{fuzz_api}/v3/models/{run_id}", json=body, headers=alice, timeout=10
        )
        assert answer.status_code == 400, (body, answer.text)
        check("PATCH", "/v3/models/{run_id}", answer, **one)

    for status in (200, 409):  # halted at once (it never started), then already ended
        answer = requests.patch(
            f"{fuzz_api}/v3/models/{run_id}", json={"status": "halt"}, headers=alice, timeout=10
        )
        assert answer.status_code == status, answer.text
        check("PATCH", "/v3/models/{run_id}", answer, **one)
    answer = requests.get(f"{fuzz_api}/v3/models/{run_id}", headers=alice, timeout=10)
    check("GET", "/v3/models/{run_id}", answer, **one)  # an ended run: ended_at, history
    answer = requests.get(  # an ended run's followed log ends at once
        f"{fuzz_api}/v3/models/{run_id}/logs?follow=true", headers=alice, timeout=10
    )
    assert answer.status_code == 200 and "event: end" in answer.text
    check("GET", "/v3/models/{run_id}/logs", answer, query={"follow": True}, **one)
    answer = requests.delete(f"{fuzz_api}/v3/models/{run_id}", headers=alice, timeout=10)
    assert answer.status_code == 200 and answer.json()["deleted"] is True
    check("DELETE", "/v3/models/{run_id}", answer, **one)

    answer = requests.get(f"{fuzz_api}/v3/nodes", headers=alice, timeout=10)
    assert answer.status_code == 200
    check("GET", "/v3/nodes", answer)
    drain = {"path_parameters": {"name": "no-such-worker"}}
    answer = requests.post(f"{fuzz_api}/v3/nodes/no-such-worker/drain", headers=bob, timeout=10)
    assert answer.status_code == 403
    check("POST", "/v3/nodes/{name}/drain", answer, **drain)
    answer = requests.get(f"{fuzz_api}/v3/models", timeout=10)
    assert answer.status_code == 401
    check("GET", "/v3/models", answer)
    for path in ("/health", "/metrics", "/openapi.json"):
        answer = requests.get(f"{fuzz_api}{path}", timeout=10)
        assert answer.status_code == 200
        check("GET", path, answer)
