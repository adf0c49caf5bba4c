"""The in-process token-count cache: same answers as the store, fewer store lookups, bounded staleness."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import redis.asyncio as aioredis

from mailgw_libs.bayes import CachedStore, MemoryStore, RedisStore, Totals, database_name


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[set[str]] = []

    async def lookup(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        wanted = set(tokens)
        self.asked.append(wanted)
        return await super().lookup(wanted)


async def test_answers_equal_the_store_and_repeats_are_served_from_memory() -> None:
    store, clock = CountingStore(), Clock()
    await store.learn("s1", {"cheap", "pills"}, "spam")
    await store.learn("h1", {"meeting", "agenda"}, "ham")
    cached = CachedStore(store, ttl_s=30, clock=clock)
    first = await cached.lookup({"cheap", "meeting", "unknown"})
    assert first == await MemoryStore.lookup(store, {"cheap", "meeting", "unknown"})
    again = await cached.lookup({"cheap", "unknown", "meeting"})
    assert again == first
    assert len(store.asked) == 1  # the repeat asked the store nothing
    await cached.lookup({"cheap", "agenda"})
    assert store.asked[-1] == {"agenda"}  # only what was not known yet
    assert (cached.hits, cached.misses) == (4, 4)


async def test_stale_answers_last_at_most_the_ttl() -> None:
    store, clock = CountingStore(), Clock()
    cached = CachedStore(store, ttl_s=30, clock=clock)
    assert (await cached.lookup({"viagra"}))[1] == {}
    await store.learn("s1", {"viagra"}, "spam")  # learned elsewhere (another replica)
    clock.now = 29.9
    assert (await cached.lookup({"viagra"}))[1] == {}
    clock.now = 30.0
    totals, counts = await cached.lookup({"viagra"})
    assert counts == {"viagra": (1, 0)} and totals.spam == 1


async def test_learning_through_the_cache_is_seen_at_once() -> None:
    store, clock = CountingStore(), Clock()
    cached = CachedStore(store, ttl_s=3600, clock=clock)
    await cached.lookup({"offer", "hello"})
    await cached.learn("s1", {"offer"}, "spam")
    totals, counts = await cached.lookup({"offer", "hello"})
    assert counts == {"offer": (1, 0)} and totals.spam == 1
    await cached.forget("s1", {"offer"})
    totals, counts = await cached.lookup({"offer"})
    assert counts == {} and totals.spam == 0


async def test_size_is_bounded() -> None:
    store, clock = CountingStore(), Clock()
    cached = CachedStore(store, ttl_s=3600, max_entries=100, clock=clock)
    for round_ in range(5):
        await cached.lookup({f"t{round_}-{i}" for i in range(80)})
        assert len(cached._counts) <= 180  # the bound is what is tested
    with pytest.raises(ValueError):
        CachedStore(store, ttl_s=0)




async def test_on_redis_equal_answers_and_reset_clears(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    cached = CachedStore(store, ttl_s=30)
    await cached.learn("m1", {"cheap", "pills", "now"}, "spam")
    await cached.learn("h1", {"meeting", "now"}, "ham")
    tokens = {"cheap", "now", "meeting", "unknown"}
    assert await cached.lookup(tokens) == await store.lookup(tokens)
    assert await cached.lookup(tokens) == await store.lookup(tokens)
    await cached.reset()
    totals, counts = await cached.lookup(tokens)
    assert (totals.spam, totals.ham, counts) == (0, 0, {})
