"""VerdictJoin and Decider against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from mailgw_libs import frames
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.events import Direction, MailAction, MailReceived, SymbolHit, Verdict
from mailgw_rules.decider import Decider
from mailgw_rules.engine import RuleEngine
from mailgw_rules.join import VerdictJoin

SCORERS = ["antispam", "antivirus"]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def received(mid: str) -> bytes:
    env = MailReceived(message_id=mid, received_at=datetime.now(UTC), client_ip="192.0.2.1", mail_from="s@x.org",
                       rcpt_tos=["a@example.com"], direction=Direction.INBOUND, size=5)
    return frames.pack(env, b"Subject: t\r\n\r\nbody")


class Published:
    def __init__(self) -> None:
        self.actions: list[tuple[MailAction, bytes]] = []
        self.fail = False

    async def __call__(self, action: MailAction, raw: bytes) -> None:
        if self.fail:
            raise ConnectionError("kafka down")
        self.actions.append((action, raw))


def make(redis: aioredis.Redis, unique: str, deadline: float = 60) -> tuple[VerdictJoin, Decider, Published]:
    join = VerdictJoin(redis, SCORERS, deadline, 3600, prefix=f"test:{unique}:")
    pub = Published()
    decider = Decider(join, RuleEngine(RuleSystemConfig.defaults()), {"antivirus": "quarantine"}, pub, 10**7)
    return join, decider, pub


async def test_decides_when_all_verdicts_are_in_whatever_the_order(redis: aioredis.Redis, unique: str) -> None:
    join, decider, pub = make(redis, unique)
    await join.add_verdict(Verdict.of("M1", "antivirus", [], 1))
    assert not await decider.decide_if_complete("M1")
    await join.add_received("M1", received("M1"), time.time())
    assert not await decider.decide_if_complete("M1")
    await join.add_verdict(Verdict.of("M1", "antispam", [SymbolHit(name="X", score=6)], 1))
    assert await decider.decide_if_complete("M1")
    action, raw = pub.actions[0]
    assert action.decisions[0].spam and raw == b"Subject: t\r\n\r\nbody"
    assert action.decisions[0].rule == "Quarantine/Mark Spam (Level 3)"
    assert await join.is_done("M1") and await join.pending() == 0
    # Redelivered events after the decision change nothing.
    await join.add_verdict(Verdict.of("M1", "antispam", [], 1))
    assert not await decider.decide("M1")
    assert len(pub.actions) == 1


async def test_deadline_decides_with_what_is_there(redis: aioredis.Redis, unique: str) -> None:
    join, decider, pub = make(redis, unique, deadline=0.0)
    await join.add_received("M2", received("M2"), time.time() - 1)
    await join.add_verdict(Verdict.of("M2", "antispam", [], 1))
    due = await join.due(time.time())
    assert due == ["M2"]
    assert await decider.decide("M2")
    action, _ = pub.actions[0]
    assert action.missing_scorers == ["antivirus"] and action.decisions[0].fate == "quarantine"


async def test_publish_failure_keeps_the_message_for_a_retry(redis: aioredis.Redis, unique: str) -> None:
    join, decider, pub = make(redis, unique, deadline=0.0)
    await join.add_received("M3", received("M3"), time.time() - 1)
    pub.fail = True
    with pytest.raises(ConnectionError):
        await decider.decide("M3")
    assert await join.due(time.time()) == ["M3"]
    pub.fail = False
    assert await decider.decide("M3")
    assert len(pub.actions) == 1


async def test_concurrent_claims_decide_once(redis: aioredis.Redis, unique: str) -> None:
    join, decider, pub = make(redis, unique)
    await join.add_received("M4", received("M4"), time.time())
    assert await join.claim("M4")
    assert not await decider.decide("M4")  # another worker holds the claim
    await join.release("M4")
    assert await decider.decide("M4")
    assert len(pub.actions) == 1


async def test_deadline_decision_stays_in_the_message_trace(redis: aioredis.Redis, unique: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    join, decider, _ = make(redis, unique, deadline=0.0)
    seen: list[str] = []

    async def publish(action: MailAction, raw: bytes) -> None:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    decider.publish = publish
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await join.add_received("M5", received("M5"), time.time() - 1, f"00-{trace_id}-00f067aa0ba902b7-01")
    assert await decider.decide("M5")
    assert seen == [trace_id]


async def test_directory_outage_leaves_the_message_for_the_sweeper(redis: aioredis.Redis, unique: str) -> None:
    from .support import FakeDirectory, config

    directory = FakeDirectory(users=set(), groups={"staff": {"a@example.com"}})
    directory.down = True
    rules = config("""
who: {Staff: {objects: [{type: ldap_group, profile: corp, group: staff}]}}
actions: {Block: {objects: [{type: block}]}}
rules: [{name: Staff, priority: 50, to: [Staff], actions: [Block]}]
""")
    join, decider, pub = make(redis, unique)
    decider.engine = RuleEngine(rules, directory)
    await join.add_received("M6", received("M6"), time.time() - 100)
    await join.add_verdict(Verdict.of("M6", "antispam", [], 1))
    await join.add_verdict(Verdict.of("M6", "antivirus", [], 1))
    assert not await decider.decide_if_complete("M6")
    assert not pub.actions and await join.due(time.time()) == ["M6"] and not await join.is_done("M6")
    directory.down = False
    assert await decider.decide("M6")
    assert pub.actions[0][0].decisions[0].fate == "block"
