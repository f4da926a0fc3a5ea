"""One active instance among several (the reconciler, the experiment controller): a Redis key
holding the active one's identity with a TTL, taken when free and kept by refreshing it; and
how such a service starts (its command line, logging, settings, Redis)."""

from __future__ import annotations

import argparse
import logging
import sys

import redis

from common.settings import Settings, SettingsError

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


def start_service(prog: str, description: str, argv: list[str] | None):
    """`prog`'s command line read and logging set up; (settings, Redis connection), or None
    when the settings are refused (said on stderr, for an exit status of 2)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    return settings, redis.Redis.from_url(settings.redis_url, decode_responses=True)
