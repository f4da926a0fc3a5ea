"""Bearer-token auth (tokens kept hashed: common/tokens.py), roles, the per-token request
rate limit, and the audit trail of what a request changed."""

from __future__ import annotations

import logging
import math
import time

from flask import current_app, g, request

from api.errors import ApiError
from common import keys
from common.tokens import Principal, TokenRegistry, TokensFileError

log = logging.getLogger(__name__)


def current_principal() -> Principal:
    """Who makes this request (checked once per request, rate limit counted once)."""
    found = g.get("dlaas_principal")
    if found is not None:
        return found
    services = current_app.extensions["dlaas"]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    try:
        principal = services.tokens.resolve(token.strip())
    except TokensFileError as exc:
        log.error("%s", exc)
        raise ApiError(503, "service misconfigured: the tokens file cannot be used") from None
    if principal is None:
        raise ApiError(401, "invalid token")
    _rate_limit(services.tokens, principal, services.settings.requests_per_minute)
    g.dlaas_principal = principal
    return principal


def current_user() -> str:
    return current_principal().user


def require_admin(what: str) -> Principal:
    principal = current_principal()
    if not principal.admin:
        raise ApiError(403, f"{what} is for administrators")
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
    services = current_app.extensions["dlaas"]
    principal = g.get("dlaas_principal")
    services.audit.record(
        principal.user if principal else "-", action, target, request.remote_addr or "", **details
    )
