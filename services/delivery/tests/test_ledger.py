"""The delivery ledger on a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mailgw_delivery.dedupe import DeliveryLedger
from mailgw_libs.bus import TransientError


async def test_marked_recipients_are_found_with_their_answer_and_expire(redis_url: str, unique: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = DeliveryLedger(client, f"test:{unique}:", ttl_s=300)
        assert await ledger.delivered("M1", ["a@x.com", "b@x.com"]) == {}
        assert await ledger.mark("M1", [("a@x.com", "250 2.0.0 Ok")])
        assert await ledger.delivered("M1", ["a@x.com", "b@x.com"]) == {"a@x.com": "250 2.0.0 Ok"}
        assert await ledger.delivered("M2", ["a@x.com"]) == {}
        assert await ledger.delivered("M1", []) == {}
        assert 290 <= await client.ttl(f"test:{unique}:M1:a@x.com") <= 300
        assert await ledger.ping() == (True, "PONG")
    finally:
        await client.aclose()


async def test_redis_down_is_a_transient_error(closed_port: int) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{closed_port}/0", socket_connect_timeout=0.5)
    try:
        ledger = DeliveryLedger(client, "test:", ttl_s=300, mark_attempts=2, mark_pause_s=0.01)
        with pytest.raises(TransientError):
            await ledger.delivered("M1", ["a@x.com"])
        assert await ledger.mark("M1", [("a@x.com", "250 Ok")]) is False
        ok, detail = await ledger.ping()
        assert not ok and "Connect" in detail
    finally:
        await client.aclose()
