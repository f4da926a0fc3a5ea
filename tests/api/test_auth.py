"""Access rules as decorators (api/auth.py): what they refuse before the view runs, and what
they leave the view. Nothing here reaches Redis (a refused request never gets that far)."""

from __future__ import annotations

import redis
from cryptography.fernet import Fernet
from flask import jsonify

from api.app import create_app
from api.auth import Access, admin_only, authenticated, caller
from common.settings import Settings


def _app(tmp_path):
    settings = Settings(home=tmp_path, secret_key=Fernet.generate_key().decode())
    app = create_app(settings, redis_client=redis.Redis(port=1))

    @app.get("/t/user")
    @authenticated
    def for_users():
        return jsonify(user=caller().user)

    @app.get("/t/admin")
    @admin_only("testing")
    def for_admins():
        return jsonify(user=caller().user)

    @app.get("/t/public")
    def public():
        return jsonify(user=caller().user)

    return app


def test_the_rule_is_kept_on_the_view(tmp_path):
    app = _app(tmp_path)
    assert app.view_functions["for_users"].access is Access.USER
    assert app.view_functions["for_admins"].access is Access.ADMIN
    assert not hasattr(app.view_functions["public"], "access")
    assert app.view_functions["for_users"].__name__ == "for_users"


def test_no_token_is_401_in_the_one_error_shape(tmp_path):
    client = _app(tmp_path).test_client()
    for path in ("/t/user", "/t/admin"):
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401
            assert answer.json == {
                "error": {
                    "status": 401,
                    "message": "missing bearer token (Authorization: Bearer <token>)",
                }
            }


def test_caller_in_a_view_without_a_rule_is_a_programming_error(tmp_path):
    answer = _app(tmp_path).test_client().get("/t/public")
    assert answer.status_code == 500
