"""Fail-fast access to an optional store (Redis) on a hot path.

Checks that may fail open (greylisting, rate limits, a verdict cache) must not add a timeout to
every message while their store is down: the client has short timeouts and no retries, and after
one failure the `Breaker` skips the store for a pause.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def make_redis(url: str, timeout_s: float) -> aioredis.Redis:
    """A client with short timeouts and no retries (the caller fails open)."""
    return aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                   retry=Retry(NoBackoff(), 0))


class Breaker:
    """After a store failure, skip the store for `pause_s`."""

    def __init__(self, pause_s: float = 5.0) -> None:
        self.pause_s = pause_s
        self._open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.pause_s
