"""Fixtures shared by the libs tests."""

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's real redis-server."""
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()
