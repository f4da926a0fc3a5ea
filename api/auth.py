"""Bearer-token auth against the tokens file (`DLAAS_TOKENS_FILE`: {"token": "user", ...})."""

from __future__ import annotations

import hmac
import json
import threading
from pathlib import Path

from flask import request

from api.errors import ApiError


class TokenFile:
    """Maps tokens to user names; re-read when the file changes, so edits apply without restart."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._tokens: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        with self._lock:
            if mtime != self._mtime:
                data = json.loads(self.path.read_text())
                self._tokens = {str(k): str(v) for k, v in data.items()}
                self._mtime = mtime
            return self._tokens

    def user_for(self, token: str) -> str | None:
        for known, user in self._load().items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None


def current_user(tokens: TokenFile) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
    user = tokens.user_for(token.strip())
    if user is None:
        raise ApiError(401, "invalid token")
    return user
