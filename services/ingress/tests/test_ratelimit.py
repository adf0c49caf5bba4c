"""Message rate limits on a real Redis with an injectable clock."""

from __future__ import annotations

import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_ingress.ratelimit import RateLimiter
from mailgw_libs.failfast import make_redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_040.0  # 40 s into a minute window

    def __call__(self) -> float:
        return self.now


async def test_limit_trips_and_recovers_in_the_next_window(redis_url: str, unique: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    clock = FakeClock()
    limiter = RateLimiter(client, f"test:{unique}:", clock=clock)
    try:
        counters = {"client": ("198.51.100.7", 3), "sender": ("s@example.org", 100)}
        assert [await limiter.hit(counters) for _ in range(3)] == [None, None, None]
        assert await limiter.hit(counters) == "client"
        # Another client is not affected.
        assert await limiter.hit({"client": ("198.51.100.8", 3)}) is None
        clock.now += 60
        assert await limiter.hit(counters) is None
        # The sender counter trips on its own, whatever client sends.
        for i in range(2):
            assert await limiter.hit({"client": (f"203.0.113.{i}", 10), "sender": ("Other@Example.org", 2)}) is None
        assert await limiter.hit({"client": ("203.0.113.9", 10), "sender": ("other@example.org", 2)}) == "sender"
        assert await limiter.hit({"client": ("x", 0), "sender": ("y", 0)}) is None  # 0 = off
    finally:
        await client.aclose()


async def test_redis_down_fails_open() -> None:
    dead = make_redis(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    try:
        assert await RateLimiter(dead).hit({"client": ("198.51.100.7", 1)}) is None
    finally:
        await dead.aclose()
