"""The Bayes token store on a real redis-server: learn, relearn, forget, expiry, stats, reset, per-user names."""


import pytest
import redis.asyncio as aioredis

from mailgw_libs.bayes import BayesFilter, ClassifierConfig, RedisStore, database_name, token_id
from mailgw_libs.bayes.store import today


async def test_learn_is_idempotent_relearn_moves_forget_removes(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    assert await store.learn("m1", {"cheap", "pills", "now"}, "spam") == "learned"
    assert await store.learn("m1", {"cheap", "pills", "now"}, "spam") == "unchanged"
    assert await store.learn("h1", {"meeting", "now"}, "ham") == "learned"
    totals, counts = await store.lookup({"cheap", "now", "meeting", "unknown"})
    assert (totals.spam, totals.ham) == (1, 1)
    assert counts == {"cheap": (1, 0), "now": (1, 1), "meeting": (0, 1)}
    assert await store.learn("m1", {"cheap", "pills", "now"}, "ham") == "moved"
    totals, counts = await store.lookup({"cheap", "now"})
    assert (totals.spam, totals.ham) == (0, 2) and counts == {"cheap": (0, 1), "now": (0, 2)}
    assert await store.forget("m1", {"cheap", "pills", "now"}) == "forgotten"
    assert await store.forget("m1", {"cheap", "pills", "now"}) == "unknown"
    totals, counts = await store.lookup({"cheap", "pills", "now"})
    assert (totals.spam, totals.ham) == (0, 1) and counts == {"now": (0, 1)}
    # a token whose counts reached zero is deleted, not left as an empty hash
    assert not await client.exists(f"{store.prefix}t:{token_id('cheap')}")
    stats = await store.stats()
    assert (stats.spam_messages, stats.ham_messages, stats.tokens, stats.learned_messages) == (0, 1, 2, 1)


async def test_keys_are_hashed_and_bounded(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    await store.learn("m", {"x" * 100_000, "é\x00\udcff"}, "spam")
    keys = [k async for k in client.scan_iter(match=store.prefix + "*")]
    assert keys and max(len(k) for k in keys) < 80


async def test_expire_drops_rare_old_tokens_only(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    await store.learn("m1", {"rare", "common"}, "spam")
    await store.learn("m2", {"common"}, "spam")
    assert await store.expire(max_age_days=30, max_count=1) == 0               # nothing old yet
    assert await store.expire(max_age_days=30, max_count=1, day=today() + 31) == 1
    _, counts = await store.lookup({"rare", "common"})
    assert counts == {"common": (2, 0)}


async def test_minimum_training_and_classification(client: aioredis.Redis, unique: str) -> None:
    bayes = BayesFilter(RedisStore(client, database_name(unique)), ClassifierConfig(min_spam=5, min_ham=5))
    for i in range(5):
        assert await bayes.classify({"viagra"}) is None
        await bayes.learn(f"s{i}", {"viagra", "pills", f"noise{i}"}, "spam")
        await bayes.learn(f"h{i}", {"meeting", "agenda", f"other{i}"}, "ham")
    spam = await bayes.classify({"viagra", "pills", "newword"})
    ham = await bayes.classify({"meeting", "agenda"})
    assert spam is not None and spam.probability > 0.9
    assert ham is not None and ham.probability < 0.1


async def test_reset_and_per_user_databases_are_separate(client: aioredis.Redis, unique: str) -> None:
    site = RedisStore(client, database_name(unique))
    user = RedisStore(client, database_name(unique, "Bob@Example.com"))
    assert database_name(unique, "bob@example.com ") == database_name(unique, "Bob@Example.com")
    assert "bob" not in user.prefix
    await site.learn("m", {"a"}, "spam")
    await user.learn("m", {"a"}, "ham")
    assert (await site.lookup({"a"}))[1] == {"a": (1, 0)}
    assert (await user.lookup({"a"}))[1] == {"a": (0, 1)}
    await user.reset()
    assert (await user.stats()).tokens == 0 and (await site.stats()).tokens == 1
    assert [k async for k in client.scan_iter(match=user.prefix + "*")] == []


async def test_learned_ids_are_bounded_oldest_first(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique), max_learned=3)
    for i in range(5):
        assert await store.learn(f"m{i}", {f"tok{i}", "shared"}, "spam") == "learned"
    assert (await store.stats()).learned_messages == 3
    assert await client.zcard(store.prefix + "learned_at") == 3
    assert await store.learn("m4", {"tok4", "shared"}, "spam") == "unchanged"  # the newest are still known
    assert await store.forget("m0", {"tok0", "shared"}) == "unknown"          # the oldest id went first
    totals, counts = await store.lookup({"shared"})
    assert totals.spam == 5 and counts == {"shared": (5, 0)}                   # the counts stay
    with pytest.raises(ValueError):
        RedisStore(client, database_name(unique), max_learned=0)


async def test_expire_drops_old_learned_ids_and_dates_untracked_ones(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    await store.learn("m1", {"a"}, "spam")
    # an id learned before the learned_at index existed (written as older versions did)
    await client.hset(store.prefix + "learned", "legacy", "h")
    await store.expire(max_age_days=30, max_count=0)
    assert (await store.stats()).learned_messages == 2
    assert await client.zcard(store.prefix + "learned_at") == 2               # the legacy id got a day
    await store.expire(max_age_days=30, max_count=0, day=today() + 31)
    assert (await store.stats()).learned_messages == 0
    assert await client.zcard(store.prefix + "learned_at") == 0
    assert await store.forget("m1", {"a"}) == "unknown"
    await store.reset()
    assert not [k async for k in client.scan_iter(match=store.prefix + "*")]


async def test_forget_removes_the_learned_day(client: aioredis.Redis, unique: str) -> None:
    store = RedisStore(client, database_name(unique))
    await store.learn("m1", {"a"}, "spam")
    assert await store.forget("m1", {"a"}) == "forgotten"
    assert await client.zcard(store.prefix + "learned_at") == 0
