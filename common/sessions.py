"""Browser sessions of the dashboard, kept in Redis (OWASP's session management rules).

The cookie holds only a random session id; Redis keeps, under the id's hash, who signed in,
the hash of the token they signed in with (never the token), and the session's CSRF token.
Every request resolves the token hash again, so revoking a token ends its sessions."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import redis

from common import keys
from common.clock import iso, utcnow


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    token_hash: str
    csrf: str

    def csrf_matches(self, sent: str) -> bool:
        return bool(sent) and hmac.compare_digest(sent, self.csrf)


class SessionStore:
    def __init__(self, connection: redis.Redis, hours: float):
        self.redis = connection
        self.ttl_seconds = max(1, int(hours * 3600))

    def create(self, user: str, token_hash: str) -> tuple[str, Session]:
        """A new session: (its id, for the cookie only; the session)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(user, token_hash, secrets.token_urlsafe(32))
        record = {
            "user": user,
            "token_hash": token_hash,
            "csrf": session.csrf,
            "created_at": iso(utcnow()),
        }
        self.redis.set(keys.session(_hashed(session_id)), json.dumps(record), ex=self.ttl_seconds)
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        found = self.redis.get(keys.session(_hashed(session_id)))
        if found is None:
            return None
        record = json.loads(found)
        return Session(record["user"], record["token_hash"], record["csrf"])

    def delete(self, session_id: str) -> None:
        if session_id:
            self.redis.delete(keys.session(_hashed(session_id)))
