"""Writes to Redis that must not be lost: retried with backoff through an outage, in order,
for up to the configured outage limit (the command keeps running meanwhile)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)
T = TypeVar("T")


def patiently(action: Callable[[], T], limit_seconds: float, what: str) -> T:
    deadline = time.monotonic() + limit_seconds
    delay = 0.2
    warned = False
    while True:
        try:
            result = action()
            if warned:
                log.warning("%s: written after the Redis outage", what)
            return result
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            if not warned:
                log.warning(
                    "%s: Redis unreachable (%s); retrying for up to %.0f s",
                    what,
                    exc,
                    limit_seconds,
                )
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
