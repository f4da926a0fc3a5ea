"""Tokens kept hashed, token admin, the admin role, quotas, the request rate limit, key
rotation and the audit log: over real HTTP (gunicorn) against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from common.crypto import CredentialBox, CredentialsError
from common.tokens import hash_token
from tests.conftest import make_zip, manifest_yaml

pytestmark = pytest.mark.integration

ZIP = make_zip({"train.py": "print('hi')\n"})
BIN = Path(sys.executable).parent


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _submit(api_url: str, token: str, manifest: str | None = None) -> requests.Response:
    # `large`: no worker serves it in these tests, so runs stay PENDING.
    files = {
        "model_definition": ("model.zip", ZIP, "application/zip"),
        "manifest": ("manifest.yml", manifest or manifest_yaml("true", resource="large")),
    }
    return requests.post(f"{api_url}/v3/models", files=files, headers=_h(token), timeout=10)


def _new_token(api_url: str, stack, user: str) -> str:
    made = requests.post(
        f"{api_url}/v3/admin/tokens",
        json={"user": user, "note": "test"},
        headers=_h(stack.tokens["alice"]),
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return made.json()["token"]


def _set_user_policy(stack, user: str, **policy) -> None:
    path = stack.home / "tokens.json"
    data = json.loads(path.read_text())
    data.setdefault("users", {})[user] = policy
    path.write_text(json.dumps(data))


def _wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_tokens_file_keeps_only_hashes(stack, api_url):
    text = (stack.home / "tokens.json").read_text()
    for token in stack.tokens.values():
        assert token not in text
        assert hash_token(token) in text
    assert oct((stack.home / "tokens.json").stat().st_mode & 0o777) == "0o600"


def test_created_token_works_everywhere_and_revocation_applies_at_once(stack, api_url):
    token = _new_token(api_url, stack, "carol")
    assert token.startswith("dlaas_")
    # Not kept in clear anywhere the service writes.
    r = stack.redis.client(0)
    assert token not in json.dumps(r.hgetall("dlaas:tokens"))
    with stack.api("second-api") as second:
        for url in (api_url, second):
            assert requests.get(f"{url}/v3/models", headers=_h(token), timeout=5).status_code == 200
        listed = requests.get(
            f"{api_url}/v3/admin/tokens", headers=_h(stack.tokens["alice"]), timeout=5
        ).json()["tokens"]
        mine = [t for t in listed if t["user"] == "carol" and t["source"] == "redis"]
        assert len(mine) == 1 and mine[0]["created_by"] == "alice"
        assert token not in json.dumps(listed)
        revoked = requests.delete(
            f"{second}/v3/admin/tokens/{mine[0]['id']}",
            headers=_h(stack.tokens["alice"]),
            timeout=5,
        )
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        for url in (api_url, second):
            assert _wait_for(
                lambda url=url: (
                    requests.get(f"{url}/v3/models", headers=_h(token), timeout=5).status_code
                    == 401
                ),
                seconds=3,
            )
    again = requests.delete(
        f"{api_url}/v3/admin/tokens/{mine[0]['id']}", headers=_h(stack.tokens["alice"]), timeout=5
    )
    assert again.status_code == 404
    file_token = [t for t in listed if t["source"] == "file"][0]
    in_file = requests.delete(
        f"{api_url}/v3/admin/tokens/{file_token['id']}",
        headers=_h(stack.tokens["alice"]),
        timeout=5,
    )
    assert in_file.status_code == 409 and "tokens file" in in_file.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v3/admin/tokens", None),
        ("POST", "/v3/admin/tokens", {"user": "mallory"}),
        ("DELETE", "/v3/admin/tokens/0123456789ab", None),
        ("POST", "/v3/admin/rotate-key", None),
        ("GET", "/v3/admin/audit", None),
        ("GET", "/v3/models?all=true", None),
    ],
)
def test_admin_endpoints_refuse_ordinary_users(stack, api_url, method, path, body):
    answer = requests.request(
        method, f"{api_url}{path}", json=body, headers=_h(stack.tokens["bob"]), timeout=5
    )
    assert answer.status_code == 403, answer.text
    assert "administrators" in answer.json()["error"]["message"]


def test_the_tokens_file_gives_the_admin_role(stack, api_url):
    token = _new_token(api_url, stack, "hana")
    listing = f"{api_url}/v3/admin/tokens"
    assert requests.get(listing, headers=_h(token), timeout=5).status_code == 403
    _set_user_policy(stack, "hana", role="admin")
    assert requests.get(listing, headers=_h(token), timeout=5).status_code == 200
    _set_user_policy(stack, "hana", role="user")
    assert requests.get(listing, headers=_h(token), timeout=5).status_code == 403


def test_bad_token_requests_name_the_field(stack, api_url):
    for body in (
        {},
        {"user": ""},
        {"user": "a b"},
        {"user": "x", "note": 5},
        {"user": "x", "y": 1},
    ):
        answer = requests.post(
            f"{api_url}/v3/admin/tokens", json=body, headers=_h(stack.tokens["alice"]), timeout=5
        )
        assert answer.status_code == 400, body
        assert answer.json()["error"]["field"] in ("user", "note")


def test_admin_sees_and_cancels_every_users_runs(stack, api_url):
    bobs = _submit(api_url, stack.tokens["bob"]).json()["model_id"]
    alices = _submit(api_url, stack.tokens["alice"]).json()["model_id"]
    # bob sees only his own; alice (admin) sees bob's run, lists everyone's, cancels it.
    assert (
        requests.get(
            f"{api_url}/v3/models/{alices}", headers=_h(stack.tokens["bob"]), timeout=5
        ).status_code
        == 404
    )
    shown = requests.get(
        f"{api_url}/v3/models/{bobs}", headers=_h(stack.tokens["alice"]), timeout=5
    )
    assert shown.status_code == 200 and shown.json()["model_id"] == bobs
    every = requests.get(
        f"{api_url}/v3/models?all=true&limit=200", headers=_h(stack.tokens["alice"]), timeout=5
    ).json()["models"]
    owners = {m["model_id"]: m["user"] for m in every}
    assert owners[bobs] == "bob" and owners[alices] == "alice"
    halted = requests.patch(
        f"{api_url}/v3/models/{bobs}",
        json={"status": "halt"},
        headers=_h(stack.tokens["alice"]),
        timeout=5,
    )
    assert halted.status_code == 200 and halted.json()["state"] == "HALTED"
    bob_view = requests.get(
        f"{api_url}/v3/models/{bobs}", headers=_h(stack.tokens["bob"]), timeout=5
    )
    assert bob_view.json()["state"] == "HALTED"
    # The audit log says who did it, to whose run, from where.
    entries = requests.get(
        f"{api_url}/v3/admin/audit?limit=50", headers=_h(stack.tokens["alice"]), timeout=5
    ).json()["entries"]
    cancel = [e for e in entries if e["action"] == "run.cancel" and e["target"] == bobs]
    assert cancel and cancel[0]["actor"] == "alice" and cancel[0]["owner"] == "bob"
    assert cancel[0]["address"] == "127.0.0.1"
    submit = [e for e in entries if e["action"] == "run.submit" and e["target"] == bobs]
    assert submit and submit[0]["actor"] == "bob"


def test_queued_quota_answers_429_and_stores_nothing(stack, api_url):
    token = _new_token(api_url, stack, "dave")
    _set_user_policy(stack, "dave", max_queued=2)
    first = [_submit(api_url, token) for _ in range(2)]
    assert [a.status_code for a in first] == [201, 201]
    r = stack.redis.client(0)
    before = (
        sorted(r.scan_iter("dlaas:run:*")),
        sorted(p.name for p in stack.artifact_dir.glob("*")),
        r.llen("dlaas.large"),
    )
    refused = _submit(api_url, token)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"].isdigit()
    error = refused.json()["error"]
    assert error["code"] == "quota" and "at most 2 queued runs per user" in error["message"]
    after = (
        sorted(r.scan_iter("dlaas:run:*")),
        sorted(p.name for p in stack.artifact_dir.glob("*")),
        r.llen("dlaas.large"),
    )
    assert after == before
    # A cancelled run frees its place.
    run_id = first[0].json()["model_id"]
    requests.patch(
        f"{api_url}/v3/models/{run_id}", json={"status": "halt"}, headers=_h(token), timeout=5
    )
    assert _submit(api_url, token).status_code == 201
    # Other users are not affected by dave's quota.
    assert _submit(api_url, stack.tokens["bob"]).status_code == 201


def test_rate_limit_holds_across_api_processes(stack, api_url):
    token = _new_token(api_url, stack, "erin")
    other = _new_token(api_url, stack, "frank")
    with (
        stack.api("rate-a", DLAAS_REQUESTS_PER_MINUTE="6") as a,
        stack.api("rate-b", DLAAS_REQUESTS_PER_MINUTE="6") as b,
    ):
        if time.time() % 60 > 55:  # the count is per minute: do not straddle two
            time.sleep(61 - time.time() % 60)
        codes = [
            requests.get(f"{url}/v3/models", headers=_h(token), timeout=5).status_code
            for url in (a, b, a, b, a, b)
        ]
        assert codes == [200] * 6
        limited = requests.get(f"{b}/v3/models", headers=_h(token), timeout=5)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "at most 6 requests per minute" in limited.json()["error"]["message"]
        # Another token has its own count.
        assert requests.get(f"{a}/v3/models", headers=_h(other), timeout=5).status_code == 200


def test_key_rotation_reseals_stored_credentials(stack, tmp_path):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    s3 = (
        manifest_yaml("true", resource="large")
        .replace(
            "connection: {path: tests}",
            'connection: {endpoint_url: "http://127.0.0.1:1", aws_access_key_id: AK, '
            "aws_secret_access_key: very-secret-key}",
        )
        .replace("type: local", "type: s3")
    )
    assert "very-secret-key" in s3
    # Its own Redis database, so the session's other runs keep the session's key.
    own = {"DLAAS_REDIS_URL": stack.redis.url(7), "DLAAS_STORE_TYPES": "local,s3"}
    r = stack.redis.client(7)
    r.flushdb()
    with stack.api("keys-old", DLAAS_SECRET_KEY=old, **own) as before:
        made = _submit(before, stack.tokens["alice"], s3)
        assert made.status_code == 201, made.text
    run_id = made.json()["model_id"]
    sealed = r.hget(f"dlaas:run:{run_id}", "credentials")
    assert CredentialBox(old).open(sealed)["training_data"]["aws_secret_access_key"] == (
        "very-secret-key"
    )
    with stack.api("keys-new", DLAAS_SECRET_KEY=f"{new},{old}", **own) as after:
        bob = requests.post(
            f"{after}/v3/admin/rotate-key", headers=_h(stack.tokens["bob"]), timeout=5
        )
        assert bob.status_code == 403
        rotated = requests.post(
            f"{after}/v3/admin/rotate-key", headers=_h(stack.tokens["alice"]), timeout=30
        )
        assert rotated.status_code == 200, rotated.text
        assert rotated.json() == {"resealed": 1, "unreadable": [], "keys_configured": 2}
    resealed = r.hget(f"dlaas:run:{run_id}", "credentials")
    assert resealed != sealed
    assert CredentialBox(new).open(resealed)["training_data"]["aws_access_key_id"] == "AK"
    with pytest.raises(CredentialsError):
        CredentialBox(old).open(resealed)
    entries = r.xrange("dlaas:audit")
    assert any(f["action"] == "key.rotate" and f["actor"] == "alice" for _, f in entries)
    r.flushdb()


def _dlaas(stack, api_url, user, *argv) -> subprocess.CompletedProcess:
    env = dict(stack.env, DLAAS_URL=api_url, DLAAS_TOKEN=stack.tokens.get(user, user))
    return subprocess.run(
        [str(BIN / "dlaas"), *argv], capture_output=True, text=True, env=env, timeout=60
    )


def test_admin_cli_makes_lists_and_revokes_tokens(stack, api_url):
    made = _dlaas(stack, api_url, "alice", "admin", "tokens", "create", "gina", "--note", "ci")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("Token for 'gina' (id ") and lines[-1] == "OK"
    token = lines[1]
    token_id = lines[0].split("(id ")[1].split(")")[0]
    # The new token works with the CLI as gina.
    listed = _dlaas(stack, api_url, token, "list", "training-runs")
    assert listed.returncode == 0 and "0 records found." in listed.stdout
    table = _dlaas(stack, api_url, "alice", "admin", "tokens", "list").stdout
    row = [line for line in table.splitlines() if line.startswith(token_id)]
    assert len(row) == 1 and "gina" in row[0] and "redis" in row[0] and "alice" in row[0]
    assert token not in table
    gone = _dlaas(stack, api_url, "alice", "admin", "tokens", "revoke", token_id)
    assert gone.returncode == 0 and f"Token {token_id} revoked." in gone.stdout
    refused = _dlaas(stack, api_url, token, "list", "training-runs")
    assert refused.returncode == 1 and "invalid token" in refused.stderr
    audit = _dlaas(stack, api_url, "alice", "admin", "audit", "alice", "--limit", "5").stdout
    assert "token.revoke" in audit and "token.create" in audit
    rotated = _dlaas(stack, api_url, "alice", "admin", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert "with the newest of 1 keys." in rotated.stdout
    # Ordinary users are told plainly.
    bob = _dlaas(stack, api_url, "bob", "admin", "tokens", "list")
    assert bob.returncode == 1 and "administrators" in bob.stderr
    usage = _dlaas(stack, api_url, "alice", "admin", "tokens", "frobnicate")
    assert usage.returncode == 1 and "expected create USER, list, or revoke ID" in usage.stderr


def test_list_all_shows_every_users_runs_with_their_owner(stack, api_url):
    run_id = _submit(api_url, stack.tokens["bob"]).json()["model_id"]
    every = _dlaas(stack, api_url, "alice", "list", "training-runs", "--all")
    assert every.returncode == 0
    row = [line for line in every.stdout.splitlines() if run_id in line]
    assert len(row) == 1 and " bob " in row[0]
    assert run_id not in _dlaas(stack, api_url, "alice", "list", "training-runs").stdout
