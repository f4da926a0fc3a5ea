"""The HTTP API over real HTTP (gunicorn) and a real Redis: auth, every bad input's 4xx with
nothing left behind, isolation between users, redaction."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import requests

from common.crypto import CredentialBox
from tests.conftest import make_zip, manifest_yaml

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOOD_ZIP = make_zip({"train.py": "print('hi')\n"})


def _headers(stack, user="alice"):
    return {"Authorization": f"Bearer {stack.tokens[user]}"}


def _submit(api_url, stack, zip_bytes=GOOD_ZIP, manifest=None, user="alice", files=None):
    files = (
        files
        if files is not None
        else {
            "model_definition": ("model.zip", zip_bytes, "application/zip"),
            "manifest": ("manifest.yml", manifest if manifest is not None else manifest_yaml()),
        }
    )
    return requests.post(
        f"{api_url}/v3/models", files=files, headers=_headers(stack, user), timeout=10
    )


def _footprint(stack) -> dict:
    """What a submission leaves behind: run records, stored zips, queued messages."""
    r = stack.redis.client(0)
    return {
        "runs": sorted(k for k in r.scan_iter("dlaas:run:*")),
        "artifacts": sorted(p.name for p in stack.artifact_dir.glob("*"))
        if stack.artifact_dir.exists()
        else [],
        "queued": {q: r.llen(q) for q in ("dlaas.small", "dlaas.medium", "dlaas.large")},
    }


def test_health(api_url):
    answer = requests.get(f"{api_url}/health", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "redis": "ok"}


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_requests_without_a_valid_token_are_401(api_url, header):
    headers = {"Authorization": header} if header else {}
    answer = requests.get(f"{api_url}/v3/models", headers=headers, timeout=5)
    assert answer.status_code == 401
    assert answer.json()["error"]["message"]


def _tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("train.py")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    return buffer.getvalue()


BAD_ZIPS = [
    (gzip.compress(b"x"), "gzip archives are not supported; zip is the only supported format"),
    (_tar(), "tar archives are not supported"),
    (make_zip({"../escape.py": "x"}), "'..' in paths is not allowed"),
    (make_zip({"/abs.py": "x"}), "absolute paths are not allowed"),
    (make_zip({"bomb.bin": b"\x00" * (3 * 1024 * 1024)}), "compression ratio"),
    (GOOD_ZIP[:40], "corrupt zip archive"),
    (make_zip({}), "holds no files"),
]


@pytest.mark.parametrize(("zip_bytes", "words"), BAD_ZIPS)
def test_bad_zips_are_400_and_leave_nothing(api_url, stack, zip_bytes, words):
    before = _footprint(stack)
    answer = _submit(api_url, stack, zip_bytes=zip_bytes)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "model_definition" and words in error["message"]
    assert _footprint(stack) == before


BAD_MANIFESTS = [
    (
        manifest_yaml().replace("  source: {bucket: data, type: local}", "  source: {type: local}"),
        400,
        "training_data_reference[0].source.bucket: required",
    ),
    (
        manifest_yaml().replace("name: python", "name: chainer"),
        400,
        "model_definition.framework.name: unknown framework 'chainer'",
    ),
    (manifest_yaml(resource="huge"), 400, "model_definition.execution.resource"),
    ("model_definition: [", 400, "not valid YAML"),
    (manifest_yaml(store_path="/etc"), 400, "connection.path"),
]


@pytest.mark.parametrize(("text", "status", "words"), BAD_MANIFESTS)
def test_bad_manifests_are_4xx_naming_the_field_and_leave_nothing(
    api_url, stack, text, status, words
):
    before = _footprint(stack)
    answer = _submit(api_url, stack, manifest=text)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert _footprint(stack) == before


def test_missing_parts_are_400(api_url, stack):
    before = _footprint(stack)
    only_zip = {"model_definition": ("m.zip", GOOD_ZIP, "application/zip")}
    answer = _submit(api_url, stack, files=only_zip)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "manifest: required (multipart field)"
    only_manifest = {"manifest": ("m.yml", manifest_yaml())}
    answer = _submit(api_url, stack, files=only_manifest)
    assert answer.json()["error"]["field"] == "model_definition"
    assert _footprint(stack) == before


def test_unknown_routes_and_methods_are_json_4xx(api_url, stack):
    answer = requests.get(f"{api_url}/v3/nothing", headers=_headers(stack), timeout=5)
    assert answer.status_code == 404 and "error" in answer.json()
    answer = requests.put(f"{api_url}/v3/models", headers=_headers(stack), timeout=5)
    assert answer.status_code == 405 and "error" in answer.json()


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "limit=100000"])
def test_bad_pagination_is_400(api_url, stack, query):
    answer = requests.get(f"{api_url}/v3/models?{query}", headers=_headers(stack), timeout=5)
    assert answer.status_code == 400


def test_users_see_and_delete_only_their_own_runs(api_url, stack):
    created = _submit(api_url, stack, manifest=manifest_yaml(resource="large"), user="alice")
    assert created.status_code == 201, created.text
    run_id = created.json()["model_id"]
    assert created.json()["location"] == f"/v3/models/{run_id}"
    bob = _headers(stack, "bob")
    assert requests.get(f"{api_url}/v3/models/{run_id}", headers=bob, timeout=5).status_code == 404
    assert (
        requests.delete(f"{api_url}/v3/models/{run_id}", headers=bob, timeout=5).status_code == 404
    )
    bobs = requests.get(f"{api_url}/v3/models", headers=bob, timeout=5).json()
    assert run_id not in [m["model_id"] for m in bobs["models"]]
    alices = requests.get(f"{api_url}/v3/models", headers=_headers(stack), timeout=5).json()
    assert run_id in [m["model_id"] for m in alices["models"]]
    missing = requests.get(f"{api_url}/v3/models/training-XXXXXXXXX", headers=bob, timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no training run 'training-XXXXXXXXX'"
    # Alice may delete her pending run; its queued message is then dropped by any worker.
    gone = requests.delete(f"{api_url}/v3/models/{run_id}", headers=_headers(stack), timeout=5)
    assert gone.status_code == 200
    assert (
        requests.get(
            f"{api_url}/v3/models/{run_id}", headers=_headers(stack), timeout=5
        ).status_code
        == 404
    )


def test_listing_is_newest_first_and_paginated(api_url, stack):
    ids = []
    for i in range(3):
        answer = _submit(
            api_url, stack, manifest=manifest_yaml(resource="large", name=f"page{i}"), user="bob"
        )
        ids.append(answer.json()["model_id"])
    first = requests.get(
        f"{api_url}/v3/models?limit=2", headers=_headers(stack, "bob"), timeout=5
    ).json()
    assert [m["model_id"] for m in first["models"]] == ids[::-1][:2]
    assert first["total"] >= 3 and first["next_offset"] == 2
    second = requests.get(
        f"{api_url}/v3/models?limit=2&offset=2", headers=_headers(stack, "bob"), timeout=5
    ).json()
    assert second["models"][0]["model_id"] == ids[0]


def test_credentials_never_come_back_nor_enter_the_broker(api_url, stack):
    secret_password = "swift-pa55word-" + "q" * 12
    secret_key = "s3-secret-key-" + "z" * 12
    text = (FIXTURES / "seed-swift-manifest.yml").read_text()
    text = text.replace("password: <password>", f"password: {secret_password}", 1)
    text = text.replace("password: <password>", f"password: {secret_key}", 1)
    text = text.replace("resource: small", "resource: large")
    redis_client = stack.redis.client(0)
    queued_before = redis_client.llen("dlaas.large")
    answer = _submit(api_url, stack, manifest=text)
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["model_id"]
    shown = requests.get(f"{api_url}/v3/models/{run_id}", headers=_headers(stack), timeout=5)
    listed = requests.get(f"{api_url}/v3/models", headers=_headers(stack), timeout=5)
    for body in (answer.text, shown.text, listed.text):
        assert secret_password not in body and secret_key not in body
    assert shown.json()["manifest"]["training_data"]["connection"]["password"] == "<redacted>"
    # The broker holds the run id as the task's only argument, and no credential.
    assert redis_client.llen("dlaas.large") == queued_before + 1
    message = json.loads(redis_client.lindex("dlaas.large", 0))
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [run_id] and body[1] == {}
    assert message["headers"]["task"] == "dlaas.run_training"
    raw = json.dumps(message)
    assert secret_password not in raw and secret_key not in raw
    # Stored sealed: the run record in Redis never holds them in clear either.
    record = redis_client.hgetall(f"dlaas:run:{run_id}")
    assert secret_password not in json.dumps(record) and secret_key not in json.dumps(record)
    opened = CredentialBox(stack.secret_key).open(record["credentials"])
    assert opened["training_data"]["password"] == secret_password
    assert opened["training_results"]["password"] == secret_key


def test_oversized_uploads_are_413_naming_the_limit(stack):
    with stack.api(
        "api-small-limits", DLAAS_MAX_ZIP_BYTES="100000", DLAAS_MAX_MANIFEST_BYTES="2000"
    ) as url:
        before = _footprint(stack)
        big_zip = make_zip({"weights.bin": os.urandom(120_000)})  # incompressible
        answer = _submit(url, stack, zip_bytes=big_zip)
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["message"] == (
            "model_definition: larger than the limit of 100000 bytes"
        )
        long_manifest = manifest_yaml() + "# padding\n" * 300
        answer = _submit(url, stack, manifest=long_manifest)
        assert answer.status_code == 413
        assert answer.json()["error"]["field"] == "manifest"
        huge = _submit(url, stack, zip_bytes=b"PK" + b"\0" * 400_000)  # past the request cap
        assert huge.status_code == 413
        assert (
            huge.json()["error"]["message"] == "request body larger than the limit of 167536 bytes"
        )
        assert _footprint(stack) == before


def test_redis_unreachable_is_503_not_500(stack):
    with stack.api("api-no-redis", DLAAS_REDIS_URL="redis://127.0.0.1:9/0") as url:
        health = requests.get(f"{url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        answer = _submit(url, stack)
        assert answer.status_code == 503, answer.text
        assert "Redis" in answer.json()["error"]["message"]
        listed = requests.get(f"{url}/v3/models", headers=_headers(stack), timeout=10)
        assert listed.status_code == 503


def test_store_types_not_enabled_are_422(stack):
    with stack.api("api-local-only", DLAAS_STORE_TYPES="local") as url:
        before = _footprint(stack)
        answer = _submit(url, stack, manifest=(FIXTURES / "seed-s3-manifest.yml").read_text())
        assert answer.status_code == 422
        assert (
            "'s3' stores are not enabled on this service (enabled: local)"
            in (answer.json()["error"]["message"])
        )
        assert _footprint(stack) == before
