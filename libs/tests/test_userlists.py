"""UserListStore against a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mailgw_libs.userlists import InvalidEntry, UserListStore, normalise_pattern, sender_candidates


@pytest.fixture
async def store(redis_url: str, unique: str) -> AsyncIterator[UserListStore]:
    client = aioredis.Redis.from_url(redis_url)
    yield UserListStore(client, prefix=f"test:{unique}:ul")
    await client.aclose()


async def test_user_welcome_and_block_by_address_and_domain(store: UserListStore) -> None:
    assert await store.match("alice@example.com", "bob@partner.org") is None
    assert await store.add("Alice@Example.COM", "welcome", "Bob@Partner.org") == "bob@partner.org"
    await store.add("alice@example.com", "block", "*@spammy.test")
    await store.add("alice@example.com", "block", "casino.test")  # bare domain = *@casino.test
    assert await store.match("alice@example.com", "BOB@partner.ORG") == "welcome"
    assert await store.match("alice@example.com", "x@spammy.test") == "block"
    assert await store.match("alice@example.com", "x@casino.test") == "block"
    assert await store.match("alice@example.com", "x@sub.spammy.test") is None  # *@domain is exact
    assert await store.match("carol@example.com", "x@spammy.test") is None  # other user
    assert await store.list("alice@example.com", "block") == ["*@casino.test", "*@spammy.test"]


async def test_subdomain_wildcard(store: UserListStore) -> None:
    await store.add("alice@example.com", "block", "*@*.bulk.test")
    assert await store.match("alice@example.com", "a@x.y.bulk.test") == "block"
    assert await store.match("alice@example.com", "a@bulk.test") is None


async def test_domain_lists_and_precedence(store: UserListStore) -> None:
    await store.add("example.com", "block", "*@partner.org")
    assert await store.match("anyone@example.com", "x@partner.org") == "block"
    assert await store.match("anyone@other.com", "x@partner.org") is None
    # The user's own welcome beats the domain's block.
    await store.add("alice@example.com", "welcome", "boss@partner.org")
    assert await store.match("alice@example.com", "boss@partner.org") == "welcome"
    assert await store.match("alice@example.com", "x@partner.org") == "block"
    # Within one owner, welcome wins over block.
    await store.add("alice@example.com", "block", "*@partner.org")
    assert await store.match("alice@example.com", "boss@partner.org") == "welcome"


async def test_remove(store: UserListStore) -> None:
    await store.add("@example.com", "welcome", "*@partner.org")
    assert await store.list("example.com", "welcome") == ["*@partner.org"]
    assert await store.remove("example.com", "welcome", "partner.org") is True
    assert await store.remove("example.com", "welcome", "partner.org") is False
    assert await store.match("a@example.com", "x@partner.org") is None


@pytest.mark.parametrize("pattern", ["", "a@", "@", "a b@x.org", "x@@", "a*b@x.org", "*@x*.org", "x@-..org",
                                     "a@" + "x" * 300, "a@b\x00.org", "<a@b.org>", "*@"])
async def test_invalid_patterns_refused(store: UserListStore, pattern: str) -> None:
    with pytest.raises(InvalidEntry):
        await store.add("alice@example.com", "welcome", pattern)


@pytest.mark.parametrize("owner", ["", "*@example.com", "a@", "a b", "x" * 400 + "@example.com"])
async def test_invalid_owners_refused(store: UserListStore, owner: str) -> None:
    with pytest.raises(InvalidEntry):
        await store.add(owner, "block", "x@y.org")


async def test_hostile_senders_and_recipients_do_not_match_or_raise(store: UserListStore) -> None:
    await store.add("alice@example.com", "block", "*@example.org")
    for sender in ["", "<>", "no-at-sign", "@example.org", "a@" + ".".join(["x"] * 200) + ".org",
                   "a@" + "x" * 100_000, "a\x00@example.org", "a@example.org\r\nX: y"]:
        assert await store.match("alice@example.com", sender) is None
    assert await store.match("", "a@example.org") is None
    assert await store.match("x" * 100_000, "a@example.org") is None


def test_unknown_list_kind_refused() -> None:
    store = UserListStore(aioredis.Redis())  # no connection made: the kind is refused before
    with pytest.raises(InvalidEntry):
        store._key("grey", "user", "a@b.c")  # type: ignore[arg-type]


def test_candidates_and_normal_form() -> None:
    assert sender_candidates("Bob@Mail.Partner.ORG") == [
        "bob@mail.partner.org", "*@mail.partner.org", "*@*.partner.org", "*@*.org"]
    assert normalise_pattern("@partner.org".lstrip("@")) == "*@partner.org"
    assert normalise_pattern("*@*.Partner.org.") == "*@*.partner.org"


async def test_match_many_answers_per_recipient_in_order(store: UserListStore) -> None:
    await store.add("a@example.com", "welcome", "*@partner.org")
    await store.add("example.com", "block", "*@partner.org")
    rcpts = ["a@example.com", "not an address", "b@example.com", "c@other.com"] + [f"u{i}@x.test" for i in range(2000)]
    answers = await store.match_many(rcpts, "s@partner.org")
    assert answers[:4] == ["welcome", None, "block", None] and len(answers) == len(rcpts)
    assert await store.match_many([], "s@partner.org") == []
    assert await store.match_many(["a@example.com"], "<>") == [None]
