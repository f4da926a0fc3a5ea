"""Bearer-token auth (tokens kept hashed: common/tokens.py), roles, the per-token request
rate limit, and the audit trail of what a request changed.

Access rules are decorators above the view, as in Flask's tutorial (`@login_required`):

    @bp.get("/tokens")
    @admin_only("listing tokens")
    def list_tokens(): ...

`@authenticated` lets any valid token in, `@admin_only(what)` only the admin role (403
otherwise); both count the request against its token's rate limit (429) and leave the caller
in `caller()`. A view with neither is public. api/openapi.py reads the rule off the view
(`access`), so the document's security, 401, 403 and 429 follow it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from flask import g, request

from api.errors import ApiError
from api.services import current_services
from common import keys
from common.tokens import Principal, TokenRegistry, TokensFileError

log = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable)

# The dashboard's session cookie (HttpOnly, SameSite=Strict: api/ui.py sets it), and the
# header its scripts send the session's CSRF token in.
SESSION_COOKIE = "dlaas_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(str, Enum):
    """Who may call a view; views carry it as their `access` attribute."""

    USER = "user"  # any valid token
    ADMIN = "admin"  # the admin role only


def authenticated(view: View) -> View:
    """The request needs a valid bearer token (401 otherwise)."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        _authenticate()
        return view(*args, **kwargs)

    checked.access = Access.USER
    return checked  # type: ignore[return-value]


def admin_only(what: str) -> Callable[[View], View]:
    """The request needs the admin role: 403 "`what` is for administrators" otherwise."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def checked(*args, **kwargs):
            ensure_admin(_authenticate(), what)
            return view(*args, **kwargs)

        checked.access = Access.ADMIN
        return checked  # type: ignore[return-value]

    return decorate


def ensure_admin(principal: Principal, what: str) -> None:
    """403 unless an admin: for a view only part of which is the admin's (`?all=true`)."""
    if not principal.admin:
        raise ApiError(403, f"{what} is for administrators")


def caller() -> Principal:
    """Who makes this request; only for views under `@authenticated` or `@admin_only`."""
    principal = g.get("dlaas_principal")
    if principal is None:
        raise RuntimeError("caller() in a view without @authenticated or @admin_only")
    return principal


def _authenticate() -> Principal:
    """Checks the token once per request, and counts the request once against its limit."""
    found = g.get("dlaas_principal")
    if found is not None:
        return found
    services = current_services()
    header = request.headers.get("Authorization", "")
    session_id = request.cookies.get(SESSION_COOKIE, "")
    try:
        if header or not session_id:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
            principal = services.tokens.resolve(token.strip())
            if principal is None:
                raise ApiError(401, "invalid token")
        else:
            principal = _session_principal(session_id)
    except TokensFileError as exc:
        log.error("%s", exc)
        raise ApiError(503, "service misconfigured: the tokens file cannot be used") from None
    _rate_limit(services.tokens, principal, services.settings.requests_per_minute)
    g.dlaas_principal = principal
    return principal


def _session_principal(session_id: str) -> Principal:
    """The dashboard's caller, from its session cookie. A request that changes something must
    also carry the session's CSRF token in `X-CSRF-Token` (a cross-site page cannot read it),
    and come from this site if the browser says where it comes from (`Origin`)."""
    services = current_services()
    session = services.sessions.get(session_id)
    if session is None:
        raise ApiError(401, "signed out or session expired: sign in again", code="signed_out")
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        if origin is not None and origin != request.host_url.rstrip("/"):
            raise ApiError(403, f"cross-site request refused (Origin {origin})", code="csrf")
        if not session.csrf_matches(request.headers.get(CSRF_HEADER, "")):
            raise ApiError(403, f"missing or wrong {CSRF_HEADER} header", code="csrf")
    principal = services.tokens.resolve_hash(session.token_hash)
    if principal is None:
        raise ApiError(401, "the token of this session was revoked: sign in again")
    return principal


def _rate_limit(tokens: TokenRegistry, principal: Principal, default: int) -> None:
    """A fixed one-minute window per token, in Redis (so it holds across API processes)."""
    limit = tokens.policy(principal.user, "requests_per_minute", default)
    if not limit:
        return
    now = time.time()
    minute = int(now // 60)
    key = keys.rate(principal.token_id, minute)
    with tokens.redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = pipe.execute()
    if count > limit:
        retry = max(1, math.ceil((minute + 1) * 60 - now))
        raise ApiError(
            429,
            f"rate limit: at most {limit} requests per minute per token; retry in {retry} s",
            code="rate_limited",
            retry_after=retry,
        )


def audit(action: str, target: str, **details) -> None:
    principal = g.get("dlaas_principal")
    current_services().audit.record(
        principal.user if principal else "-", action, target, request.remote_addr or "", **details
    )
