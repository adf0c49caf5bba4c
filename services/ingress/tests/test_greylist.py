"""Greylisting on a real Redis with an injectable clock (no sleeps)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_ingress.greylist import GreylistPolicy, client_network
from mailgw_libs.failfast import make_redis

DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def greylist(redis_client: aioredis.Redis, clock: FakeClock, unique: str) -> GreylistPolicy:
    return GreylistPolicy(redis_client, f"test:{unique}:", delay_s=180, retry_window_s=2 * DAY, whitelist_s=36 * DAY,
                          clock=clock)


T = ("198.51.100.7", "Sender@Example.ORG", "user@example.com")


async def test_first_try_and_early_retry_are_greylisted_then_accepted_after_delay(
        greylist: GreylistPolicy, clock: FakeClock) -> None:
    first = await greylist.check(*T)
    assert not first.allowed and first.state == "new"
    clock.now += 60
    early = await greylist.check(*T)
    assert not early.allowed and early.state == "early"
    clock.now += 121  # 181 s after the first attempt
    passed = await greylist.check(*T)
    assert passed.allowed and passed.state == "passed"


async def test_whitelisted_triplet_accepted_at_once_and_renewed(greylist: GreylistPolicy, clock: FakeClock) -> None:
    await greylist.check(*T)
    clock.now += 200
    assert (await greylist.check(*T)).allowed
    # 30 days later: still whitelisted, and the use renews it for another 36 days.
    clock.now += 30 * DAY
    assert (await greylist.check(*T)).state == "whitelisted"
    clock.now += 30 * DAY
    assert (await greylist.check(*T)).state == "whitelisted"


async def test_expired_whitelist_entry_is_greylisted_again(greylist: GreylistPolicy, clock: FakeClock) -> None:
    await greylist.check(*T)
    clock.now += 200
    assert (await greylist.check(*T)).allowed
    clock.now += 37 * DAY
    again = await greylist.check(*T)
    assert not again.allowed and again.state == "new"


async def test_retry_after_the_window_starts_over(greylist: GreylistPolicy, clock: FakeClock) -> None:
    await greylist.check(*T)
    clock.now += 2 * DAY + 181
    late = await greylist.check(*T)
    assert not late.allowed and late.state == "expired-retry"
    clock.now += 60
    assert not (await greylist.check(*T)).allowed
    clock.now += 180
    assert (await greylist.check(*T)).allowed


async def test_triplet_groups_client_slash_24_and_sender_case(greylist: GreylistPolicy, clock: FakeClock) -> None:
    await greylist.check("198.51.100.7", "sender@example.org", "user@example.com")
    clock.now += 200
    # Another host of the same /24, sender in another case: the same triplet.
    assert (await greylist.check("198.51.100.200", "SENDER@example.org", "user@example.com")).allowed
    # Another /24, another recipient, another sender: each a new triplet.
    assert not (await greylist.check("198.51.101.7", "sender@example.org", "user@example.com")).allowed
    assert not (await greylist.check("198.51.100.7", "sender@example.org", "other@example.com")).allowed
    assert not (await greylist.check("198.51.100.7", "else@example.org", "user@example.com")).allowed


def test_client_network() -> None:
    assert client_network("198.51.100.7") == "198.51.100.0/24"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_network("not-an-ip") == "not-an-ip"


async def test_ipv6_groups_by_slash_64(greylist: GreylistPolicy, clock: FakeClock) -> None:
    await greylist.check("2001:db8:1:2::1", "s@example.org", "u@example.com")
    clock.now += 200
    assert (await greylist.check("2001:db8:1:2:ffff::9", "s@example.org", "u@example.com")).allowed
    assert not (await greylist.check("2001:db8:1:3::1", "s@example.org", "u@example.com")).allowed


async def test_redis_down_fails_open(clock: FakeClock) -> None:
    dead = make_redis(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    try:
        policy = GreylistPolicy(dead, "test:", clock=clock)
        decision = await policy.check(*T)
        assert decision.allowed and decision.state == "fail-open"
        # The breaker is open now: the next checks do not even wait for Redis.
        assert policy.breaker.is_open() and (await policy.check(*T)).allowed
    finally:
        await dead.aclose()
