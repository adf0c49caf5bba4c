"""Bayes in antispam: autolearn safeguards, hostile input, mail.learn and autolearn through real Kafka and Redis."""

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from mailgw_antispam.app import build
from mailgw_antispam.bayes import AutolearnPolicy, analyse, autolearn_label, rule_kinds
from mailgw_antispam.rules import load_engine, parse_text
from mailgw_antispam.rules.engine import Engine
from mailgw_antispam.settings import AntispamSettings
from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.bayes import RedisStore, TokenizerConfig, database_name
from mailgw_libs.events import Direction, LearnRequest, MailReceived, SymbolHit, Verdict

KINDS = {"H1": "header", "H2": "header", "B1": "body", "U1": "uri", "M1": "meta"}
POLICY = AutolearnPolicy(spam_threshold=12.0, ham_threshold=0.1, min_header_points=3.0, min_body_points=3.0)


def hit(name: str, score: float) -> SymbolHit:
    return SymbolHit(name=name, score=score)


def test_autolearn_spam_needs_threshold_and_both_header_and_body_points() -> None:
    assert autolearn_label([hit("H1", 6), hit("B1", 4), hit("U1", 3)], KINDS, POLICY) == "spam"
    assert autolearn_label([hit("H1", 6), hit("H2", 7)], KINDS, POLICY) is None          # header only
    assert autolearn_label([hit("B1", 9), hit("U1", 9), hit("H1", 1)], KINDS, POLICY) is None  # body only
    assert autolearn_label([hit("H1", 4), hit("B1", 4)], KINDS, POLICY) is None          # below threshold
    assert autolearn_label([hit("GTUBE", 1000)], KINDS, POLICY) is None                  # neither kind
    assert autolearn_label([hit("H1", 3), hit("B1", 3), hit("M1", 7)], KINDS, POLICY) == "spam"


def test_autolearn_never_counts_bayes_and_honours_noautolearn() -> None:
    # Bayes alone at 5 points must not make a message learnable as spam (nor keep it from being ham).
    assert autolearn_label([hit("BAYES_999", 5.0)], KINDS, POLICY) == "ham"
    assert autolearn_label([hit("H1", 4), hit("B1", 4), hit("BAYES_99", 5.0)], KINDS, POLICY) is None
    assert autolearn_label([hit("H1", 20), hit("B1", 4)], KINDS, POLICY, frozenset({"H1"})) is None


def test_autolearn_ham_threshold_and_bayes_veto() -> None:
    assert autolearn_label([], KINDS, POLICY) == "ham"
    assert autolearn_label([hit("B1", 0.5)], KINDS, POLICY) is None
    assert autolearn_label([hit("H1", -2)], KINDS, POLICY) == "ham"
    assert autolearn_label([], KINDS, POLICY, bayes_probability=0.97) is None             # Bayes says spam
    assert autolearn_label([], KINDS, POLICY, bayes_probability=0.2) == "ham"
    assert autolearn_label([], KINDS, AutolearnPolicy(enabled=False)) is None


def test_rule_kinds_from_the_rule_set() -> None:
    engine = Engine(parse_text("header H_X Subject =~ /x/\nbody B_Y /y/\nmeta M_Z H_X && B_Y\n"
                               "tflags B_Y noautolearn\n"))
    kinds, excluded = rule_kinds(engine)
    assert kinds == {"H_X": "header", "B_Y": "body", "M_Z": "meta"} and excluded == {"B_Y"}


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\x01\xfe\xff" * 100_000,
    b"Subject: x\r\n\r\n" + b" ".join(b"soup%d" % i for i in range(1_200_000)),
    b"Subject: " + b"h" * 1_000_000 + b"\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\nbody",
    b"Subject: deep\r\n" + b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
             for i in range(3000)),
])
def test_analyse_hostile_messages_bounded(raw: bytes) -> None:
    started = time.monotonic()
    analysis = analyse(raw, 1_000_000, load_engine(), TokenizerConfig())
    assert len(analysis.tokens) <= TokenizerConfig().max_tokens + 100 and len(analysis.key) == 32
    assert time.monotonic() - started < 120                                   # hang guard, not a speed test


SPAM = ("From: \"Deals\" <win@prize.example>\r\nTo: you@example.com\r\nSubject: You won cash prize {n}\r\n"
        "Message-ID: <s{n}@prize.example>\r\n\r\nClaim your cash prize now, wire transfer fee casino jackpot {n}\r\n")
HAM = ("From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: meeting notes {n}\r\n"
       "Date: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <h{n}@example.org>\r\n\r\n"
       "Notes from the project meeting, agenda for the release review {n}\r\n")


def envelope(message_id: str) -> MailReceived:
    return MailReceived(message_id=message_id, received_at=datetime.now(UTC), client_ip="192.0.2.1",
                        mail_from="s@x.org", rcpt_tos=["bob@example.com"], direction=Direction.INBOUND, size=10)


def learn_frame(message_id: str, raw: str, label: str, forget: bool = False) -> bytes:
    request = LearnRequest(message_id=message_id, label=label, source="quarantine",  # type: ignore[arg-type]
                           requested_at=datetime.now(UTC), forget=forget)
    return frames.pack(request, raw.encode())


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_mail_learn_events_train_bayes_and_verdicts_carry_it(fresh_kafka: str, redis_url: str, unique: str,
                                                                   redis_client: aioredis.Redis) -> None:
    settings = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=0, redis_url=redis_url, bayes_site=unique,
                                bayes_min_spam=3, bayes_min_ham=3, bayes_autolearn=False)
    store = RedisStore(redis_client, database_name(unique))
    async with running(build(settings)):
        await produce(fresh_kafka, topics.MAIL_LEARN, "junk", b"\x00not a frame")
        for n in range(4):
            await produce(fresh_kafka, topics.MAIL_LEARN, f"S{n}", learn_frame(f"S{n}", SPAM.format(n=n), "spam"))
            await produce(fresh_kafka, topics.MAIL_LEARN, f"H{n}", learn_frame(f"H{n}", HAM.format(n=n), "ham"))
        # the same message again (a second "mark as spam"): no double count
        await produce(fresh_kafka, topics.MAIL_LEARN, "S0", learn_frame("S0", SPAM.format(n=0), "spam"))

        async def trained() -> bool:
            stats = await store.stats()
            return (stats.spam_messages, stats.ham_messages) == (4, 4)
        await wait_for(trained)

        await produce(fresh_kafka, topics.MAIL_RECEIVED, "M1", frames.pack(envelope("M1"), SPAM.format(n=9).encode()))
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "M2", frames.pack(envelope("M2"), HAM.format(n=9).encode()))
        spam = Verdict.model_validate_json((await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="M1"))[0].value)
        ham = Verdict.model_validate_json((await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="M2"))[0].value)
        assert {h.name for h in spam.symbols} & {"BAYES_99", "BAYES_999"}
        assert {h.name for h in ham.symbols} & {"BAYES_00", "BAYES_05"}
        dead = await collect(fresh_kafka, topics.dead_letter(topics.MAIL_LEARN), 1)
        assert dead[0].value == b"\x00not a frame"

        # quarantine "not spam" on a learned spam: forget it
        await produce(fresh_kafka, topics.MAIL_LEARN, "S1", learn_frame("S1", SPAM.format(n=1), "spam", forget=True))

        async def forgotten() -> bool:
            return (await store.stats()).spam_messages == 3
        await wait_for(forgotten)
    assert (await store.stats()).learned_messages == 7


async def test_autolearn_learns_clean_ham_and_survives_redis_down(fresh_kafka: str, redis_url: str, unique: str,
                                                                  redis_client: aioredis.Redis) -> None:
    settings = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=0, redis_url=redis_url, bayes_site=unique)
    store = RedisStore(redis_client, database_name(unique))
    async with running(build(settings)):
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "A1", frames.pack(envelope("A1"), HAM.format(n=1).encode()))
        verdict = Verdict.model_validate_json((await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="A1"))[0].value)
        assert verdict.score <= 0.1 and not any(h.name.startswith("BAYES") for h in verdict.symbols)  # untrained

        async def learned() -> bool:
            return (await store.stats()).ham_messages == 1
        await wait_for(learned)

    # Redis unreachable: verdicts still go out, without Bayes
    down = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=0, redis_url="redis://127.0.0.1:1/0",
                            bayes_site=unique)
    async with running(build(down)):
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "A2", frames.pack(envelope("A2"), HAM.format(n=2).encode()))
        records = await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="A2")
        assert records and not Verdict.model_validate_json(records[0].value).failed


async def test_per_user_databases_learn_both_and_score_with_the_users_once_trained(
        redis_client: aioredis.Redis, unique: str) -> None:
    from mailgw_antispam.bayes import BayesService
    from mailgw_libs.bayes import ClassifierConfig

    service = BayesService(redis_client, unique, per_user=True,
                           config=ClassifierConfig(min_spam=2, min_ham=2))
    # Bob calls "newsletter" spam; the site as a whole learns it as ham from everyone else.
    for n in range(2):
        await service.learn(frozenset({"newsletter", f"s{n}"}), f"bob-s{n}", "spam", recipient="bob@example.com")
        await service.learn(frozenset({"agenda", f"h{n}"}), f"bob-h{n}", "ham", recipient="bob@example.com")
    for n in range(8):
        await service.learn(frozenset({"newsletter", f"o{n}"}), f"site-h{n}", "ham")
        await service.learn(frozenset({"casino", f"x{n}"}), f"site-s{n}", "spam")
    bob = await service.classify(frozenset({"newsletter"}), ["bob@example.com"])
    other = await service.classify(frozenset({"newsletter"}), ["carol@example.com"])
    several = await service.classify(frozenset({"newsletter"}), ["bob@example.com", "carol@example.com"])
    assert bob is not None and bob.probability > 0.5
    assert other is not None and other.probability < 0.5                   # no trained database: the site's
    assert several is not None and several.probability < 0.5               # several recipients: the site's
    user_store = RedisStore(redis_client, database_name(unique, "bob@example.com"))
    assert (await user_store.stats()).spam_messages == 2
