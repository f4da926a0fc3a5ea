"""API tokens and the people behind them: tokens are kept only as SHA-256 hashes.

Two sources, both hashed:
- the tokens file (`DLAAS_TOKENS_FILE`, written by the operator or `deploy/stack.py`):

      {"tokens": {"sha256:<hex>": "alice"},
       "users": {"alice": {"role": "admin", "max_queued": 20, "max_active": 4,
                           "requests_per_minute": 600}}}

  re-read when it changes. "users" holds roles and per-user overrides of the quota and rate
  settings; a user needs no entry there.
- tokens made with `dlaas admin tokens create USER`, in the Redis hash `dlaas:tokens`
  (hash -> JSON record). Every request looks its token up there, so a revoked token stops
  working at once on every API process.

Tokens are 256-bit random strings, so one SHA-256 (not a slow password hash) is enough to
make a leaked hash useless.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import redis

from common import keys
from common.clock import iso, utcnow

ROLES = ("user", "admin")
POLICY_FIELDS = ("max_queued", "max_active", "requests_per_minute")


class TokensFileError(ValueError):
    """The tokens file cannot be used as it is (its message names the file and the entry)."""


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_id(token_hash: str) -> str:
    """The short public name of a token: the first 12 hex digits of its hash."""
    return token_hash.removeprefix("sha256:")[:12]


def new_token() -> str:
    return "dlaas_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    token_id: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class TokensFile:
    tokens: dict[str, str]  # hash -> user
    users: dict[str, dict]  # user -> {"role": ..., policy overrides}

    @classmethod
    def parse(cls, text: str, where: str) -> TokensFile:
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise TokensFileError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict) or set(data) - {"tokens", "users"}:
            raise TokensFileError(
                f'{where}: expected {{"tokens": {{"sha256:<hex>": USER}}, "users": {{...}}}}'
                " (tokens are kept hashed, never in clear)"
            )
        tokens, users = data.get("tokens", {}), data.get("users", {})
        if not isinstance(tokens, dict) or not isinstance(users, dict):
            raise TokensFileError(f"{where}: tokens and users must be objects")
        for hashed, user in tokens.items():
            if not (
                isinstance(hashed, str)
                and hashed.startswith("sha256:")
                and len(hashed) == 71
                and isinstance(user, str)
                and user
            ):
                raise TokensFileError(
                    f'{where}: tokens: entry {hashed[:12]!r}…: expected "sha256:<64 hex>": USER'
                )
        for user, entry in users.items():
            if not isinstance(entry, dict):
                raise TokensFileError(f"{where}: users.{user}: expected an object")
            for name, value in entry.items():
                if name == "role":
                    if value not in ROLES:
                        raise TokensFileError(
                            f"{where}: users.{user}.role: expected one of {', '.join(ROLES)}"
                        )
                elif name in POLICY_FIELDS:
                    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                        raise TokensFileError(
                            f"{where}: users.{user}.{name}: expected a whole number >= 0"
                        )
                else:
                    raise TokensFileError(f"{where}: users.{user}: unknown field {name!r}")
        return cls(dict(tokens), {u: dict(e) for u, e in users.items()})

    def dumps(self) -> str:
        return json.dumps({"tokens": self.tokens, "users": self.users}, indent=2) + "\n"


def write_tokens_file(path: Path, tokens: dict[str, str], users: dict | None = None) -> None:
    """Writes a tokens file (mode 0600) from {clear token: user}: only hashes are stored."""
    content = TokensFile({hash_token(t): u for t, u in tokens.items()}, users or {})
    path.write_text(content.dumps())
    path.chmod(0o600)


class TokenRegistry:
    """Resolves a bearer token to a Principal; creates, lists and revokes Redis tokens."""

    def __init__(self, connection: redis.Redis, path: Path | None, admin_users=()):
        self.redis = connection
        self.path = Path(path) if path else None
        self.admin_users = set(admin_users)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._file = TokensFile({}, {})

    def file(self) -> TokensFile:
        if self.path is None:
            return self._file
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return TokensFile({}, {})
        with self._lock:
            if mtime != self._mtime:
                self._file = TokensFile.parse(self.path.read_text(), str(self.path))
                self._mtime = mtime
            return self._file

    def role(self, user: str) -> str:
        if user in self.admin_users:
            return "admin"
        return self.file().users.get(user, {}).get("role", "user")

    def policy(self, user: str, name: str, default: int) -> int:
        """A per-user override from the tokens file, else the setting's value."""
        return int(self.file().users.get(user, {}).get(name, default))

    def resolve(self, token: str) -> Principal | None:
        return self.resolve_hash(hash_token(token))

    def resolve_hash(self, hashed: str) -> Principal | None:
        """The principal of the token with this hash (a browser session keeps only the hash,
        so a token revoked or removed from the file ends its sessions too)."""
        user = self.file().tokens.get(hashed)
        if user is None:
            record = self.redis.hget(keys.tokens(), hashed)
            if record is None:
                return None
            user = json.loads(record)["user"]
        return Principal(user, self.role(user), token_id(hashed))

    def create(self, user: str, created_by: str, note: str = "") -> tuple[str, dict]:
        """A new token for `user`: returns (the token, shown only now; its record)."""
        token = new_token()
        hashed = hash_token(token)
        record = {
            "id": token_id(hashed),
            "user": user,
            "created_at": iso(utcnow()),
            "created_by": created_by,
            "note": note,
        }
        self.redis.hset(keys.tokens(), hashed, json.dumps(record))
        return token, record

    def list(self) -> list[dict]:
        found = [
            dict(json.loads(record), source="redis")
            for record in self.redis.hgetall(keys.tokens()).values()
        ]
        found += [
            {"id": token_id(hashed), "user": user, "source": "file"}
            for hashed, user in self.file().tokens.items()
        ]
        return sorted(found, key=lambda r: (r["user"], r.get("created_at", ""), r["id"]))

    def revoke(self, tid: str) -> dict | None:
        """Removes the Redis token whose id is `tid`; its record, or None if there is none."""
        for hashed, record in self.redis.hgetall(keys.tokens()).items():
            if token_id(hashed) == tid:
                self.redis.hdel(keys.tokens(), hashed)
                return json.loads(record)
        return None

    def in_file(self, tid: str) -> bool:
        return any(token_id(h) == tid for h in self.file().tokens)
