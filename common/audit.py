"""The audit log: who submitted, cancelled, deleted, made or revoked a token, rotated the key,
drained a node; when, from which address, with what outcome. A capped Redis stream (read by
`GET /v3/admin/audit` and `dlaas admin audit`) and the service log, one line per entry."""

from __future__ import annotations

import logging

import redis

from common import keys
from common.clock import iso, utcnow

log = logging.getLogger("dlaas.audit")


class AuditLog:
    def __init__(self, connection: redis.Redis, max_entries: int = 100_000):
        self.redis = connection
        self.max_entries = max_entries

    def record(self, actor: str, action: str, target: str, address: str, **details: str) -> None:
        entry = {
            "time": iso(utcnow()),
            "actor": actor,
            "action": action,
            "target": target,
            "address": address or "",
            **{k: str(v) for k, v in details.items()},
        }
        log.info("audit %s", " ".join(f"{k}={v!r}" for k, v in entry.items() if k != "time"))
        try:
            self.redis.xadd(keys.audit(), entry, maxlen=self.max_entries, approximate=True)
        except redis.RedisError as exc:  # the service log above still has it
            log.error("audit entry not stored in Redis: %s", exc)

    def recent(self, limit: int = 100, actor: str | None = None) -> list[dict]:
        """The newest entries first (optionally one actor's)."""
        entries = []
        for entry_id, fields in self.redis.xrevrange(
            keys.audit(), count=limit * 10 if actor else limit
        ):
            if actor is None or fields.get("actor") == actor:
                entries.append({"id": entry_id, **fields})
            if len(entries) >= limit:
                break
        return entries
