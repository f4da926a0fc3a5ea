"""One active instance among several (the reconciler, the experiment controller): a Redis key
holding the active one's identity with a TTL, taken when free and kept by refreshing it."""

from __future__ import annotations

import redis

# Take the lock if free; keep it if ours. Returns 1 while we are the active one.
_HOLD_LOCK = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class ActiveLock:
    def __init__(self, connection: redis.Redis, key: str, identity: str, ttl_seconds: float):
        self.redis = connection
        self.key = key
        self.identity = identity
        self.ttl_ms = int(ttl_seconds * 1000)
        self._hold = connection.register_script(_HOLD_LOCK)

    def hold(self) -> bool:
        """True while this instance is the active one (the lock taken or refreshed)."""
        return bool(self._hold(keys=[self.key], args=[self.identity, self.ttl_ms]))

    def held(self) -> bool:
        return self.redis.get(self.key) == self.identity
