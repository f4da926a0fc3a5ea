"""The dashboard's sign-in and session rules (api/ui.py, api/auth.py, common/sessions.py),
against a real Redis through Flask's test client: the cookie, the CSRF and Origin checks,
revocation and expiry ending a session, no open redirect, nothing kept on a refusal."""

from __future__ import annotations

import re

import redis
from cryptography.fernet import Fernet

from api.app import create_app
from common import keys
from common.settings import Settings
from common.tokens import write_tokens_file

TOKEN = "alice-token-0123456789"


def _client(tmp_path, redis_server, store_redis, **settings):
    write_tokens_file(tmp_path / "tokens.json", {TOKEN: "alice"})
    connection = redis.Redis.from_url(redis_server.url(1), decode_responses=True)
    app = create_app(
        Settings(
            home=tmp_path,
            secret_key=Fernet.generate_key().decode(),
            tokens_file=tmp_path / "tokens.json",
            **settings,
        ),
        redis_client=connection,
    )
    return app.test_client(), connection


def _sign_in(client, token=TOKEN, **form):
    return client.post("/ui/sign-in", data={"token": token, **form})


def _csrf(client) -> str:
    page = client.get("/ui/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_signing_in_sets_an_httponly_strict_cookie_holding_no_token(
    tmp_path, redis_server, store_redis
):
    client, connection = _client(tmp_path, redis_server, store_redis)
    answer = _sign_in(client, next="/ui/fleet")
    assert answer.status_code == 303 and answer.headers["Location"] == "/ui/fleet"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("dlaas_session=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
    (stored,) = connection.keys(keys.session("*"))
    assert TOKEN not in connection.get(stored)  # Redis keeps the token's hash, not the token
    assert 0 < connection.ttl(stored) <= 43200
    assert client.get("/v3/models").status_code == 200
    assert TOKEN not in client.get("/ui/").get_data(as_text=True)


def test_a_wrong_or_missing_token_signs_nobody_in_and_keeps_nothing(
    tmp_path, redis_server, store_redis
):
    client, connection = _client(tmp_path, redis_server, store_redis)
    wrong = _sign_in(client, token="nope")
    assert wrong.status_code == 401 and "token: not a valid token" in wrong.get_data(as_text=True)
    empty = _sign_in(client, token="")
    assert empty.status_code == 400 and "token: enter your token" in empty.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers and connection.keys(keys.session("*")) == []
    foreign = client.post(
        "/ui/sign-in", data={"token": TOKEN}, headers={"Origin": "http://elsewhere.example"}
    )
    assert foreign.status_code == 403 and connection.keys(keys.session("*")) == []


def test_only_a_dashboard_path_of_this_site_is_a_place_to_go_after(
    tmp_path, redis_server, store_redis
):
    client, _ = _client(tmp_path, redis_server, store_redis)
    for target in ("https://evil.example/ui/", "//evil.example/ui/", "/v3/models", "javascript:x"):
        assert _sign_in(client, next=target).headers["Location"] == "/ui/", target


def test_a_page_sends_the_signed_out_to_sign_in_and_back(tmp_path, redis_server, store_redis):
    client, _ = _client(tmp_path, redis_server, store_redis)
    answer = client.get("/ui/fleet")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/ui/sign-in?next=/ui/fleet"
    assert client.get("/").headers["Location"] == "/ui/"


def test_changes_need_the_csrf_header_and_this_origin(tmp_path, redis_server, store_redis):
    client, _ = _client(tmp_path, redis_server, store_redis)
    _sign_in(client)
    csrf = _csrf(client)
    missing = client.delete("/v3/models/training-AbCdEf123")
    assert missing.status_code == 403
    assert missing.json["error"] == {
        "status": 403,
        "message": "missing or wrong X-CSRF-Token header",
        "code": "csrf",
    }
    assert (
        client.delete("/v3/models/training-AbCdEf123", headers={"X-CSRF-Token": "x"}).status_code
        == 403
    )
    foreign = client.delete(
        "/v3/models/training-AbCdEf123",
        headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403 and "cross-site" in foreign.json["error"]["message"]
    # With both, the request reaches the view (no such run: its own 404).
    allowed = client.delete("/v3/models/training-AbCdEf123", headers={"X-CSRF-Token": csrf})
    assert allowed.status_code == 404
    # A bearer token needs no CSRF token: no browser sends it by itself.
    bearer = client.delete(
        "/v3/models/training-AbCdEf123", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert bearer.status_code == 404


def test_signing_out_expiry_and_revocation_each_end_the_session(
    tmp_path, redis_server, store_redis
):
    client, connection = _client(tmp_path, redis_server, store_redis)
    _sign_in(client)
    assert client.post("/ui/sign-out", data={"csrf": "wrong"}).status_code == 403
    assert client.post("/ui/sign-out", data={"csrf": _csrf(client)}).status_code == 303
    assert client.get("/v3/models").status_code == 401
    assert connection.keys(keys.session("*")) == []

    _sign_in(client)
    (stored,) = connection.keys(keys.session("*"))
    connection.delete(stored)  # what its TTL does
    expired = client.get("/v3/models")
    assert expired.status_code == 401 and expired.json["error"]["code"] == "signed_out"

    _sign_in(client)
    write_tokens_file(tmp_path / "tokens.json", {"another-token-0123456789": "alice"})
    revoked = client.get("/v3/models")
    assert revoked.status_code == 401 and "revoked" in revoked.json["error"]["message"]
    assert client.get("/ui/").status_code == 303
