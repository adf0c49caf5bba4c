"""The rules service in-process on a real Kafka (Tansu) and Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from mailgw_devstack.testing import collect, produce, publish_config, running
from mailgw_libs import frames, topics
from mailgw_libs.config.model import GatewayConfig, Scoring
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.events import Direction, Fate, MailAction, MailReceived, SymbolHit, Verdict
from mailgw_libs.userlists import UserListStore
from mailgw_rules.app import build
from mailgw_rules.settings import RulesSettings


def received(mid: str) -> bytes:
    env = MailReceived(message_id=mid, received_at=datetime.now(UTC), client_ip="192.0.2.1", mail_from="s@x.org",
                       rcpt_tos=["a@example.com"], direction=Direction.INBOUND, size=5)
    return frames.pack(env, b"Subject: t\r\n\r\nbody")


async def test_joins_verdicts_and_publishes_actions(fresh_kafka: str, redis_url: str, unique: str) -> None:
    settings = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, scorers=["antispam", "antivirus"],
                             deadline_s=2.0, http_port=0, publish_timeout_s=5)
    async with running(build(settings, redis_prefix=f"t:{unique}:")):
        complete, late = f"C{unique}", f"L{unique}"
        await produce(fresh_kafka, topics.MAIL_RECEIVED, complete, received(complete))
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "junk", b"not a frame")
        await produce(fresh_kafka, topics.MAIL_VERDICTS, complete,
                      Verdict.of(complete, "antispam", [SymbolHit(name="GTUBE", score=1000)], 1).model_dump_json().encode())
        await produce(fresh_kafka, topics.MAIL_VERDICTS, complete,
                      Verdict.of(complete, "antivirus", [], 1).model_dump_json().encode())
        # Only one verdict: decided at the deadline, antivirus missing -> tempfail (held as unscanned).
        await produce(fresh_kafka, topics.MAIL_RECEIVED, late, received(late))
        await produce(fresh_kafka, topics.MAIL_VERDICTS, late,
                      Verdict.of(late, "antispam", [], 1).model_dump_json().encode())

        records = await collect(fresh_kafka, topics.MAIL_ACTIONS, 2, timeout=20)
        actions = {r.key.decode(): frames.unpack(r.value, MailAction) for r in records if r.key}
        assert actions[complete][0].decisions[0].fate is Fate.QUARANTINE
        assert actions[complete][0].decisions[0].quarantine_kind == "spam"
        assert actions[complete][1] == b"Subject: t\r\n\r\nbody"
        assert actions[late][0].missing_scorers == ["antivirus"]
        assert actions[late][0].decisions[0].quarantine_kind == "unscanned"
        assert actions[late][0].decisions[0].tempfail
        assert records[0].headers and any(h[0] == "traceparent" for h in records[0].headers)

        dead = await collect(fresh_kafka, topics.dead_letter(topics.MAIL_RECEIVED), 1, timeout=10)
        assert dead and dict(dead[0].headers)["x-mailgw-error"].startswith(b"FrameError")


def received_for(mid: str, rcpts: list[str]) -> bytes:
    env = MailReceived(message_id=mid, received_at=datetime.now(UTC), client_ip="192.0.2.1", mail_from="s@x.org",
                       rcpt_tos=rcpts, direction=Direction.INBOUND, size=5)
    return frames.pack(env, b"Subject: t\r\n\r\nbody")


async def send_scored(bootstrap: str, mid: str, rcpts: list[str], score: float) -> None:
    await produce(bootstrap, topics.MAIL_RECEIVED, mid, received_for(mid, rcpts))
    for scorer, hits in (("antispam", [SymbolHit(name="SPAMMY", score=score)]), ("antivirus", [])):
        await produce(bootstrap, topics.MAIL_VERDICTS, mid, Verdict.of(mid, scorer, hits, 1).model_dump_json().encode())


async def test_user_lists_split_recipients_and_config_changes_apply_live(fresh_kafka: str, redis_url: str,
                                                                          unique: str) -> None:
    settings = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, scorers=["antispam", "antivirus"],
                             deadline_s=30.0, http_port=0, publish_timeout_s=5, userlists_prefix=f"t:{unique}:ul")
    client = aioredis.Redis.from_url(redis_url)
    lists = UserListStore(client, prefix=settings.userlists_prefix)
    await lists.add("fan@example.com", "welcome", "*@x.org")
    await lists.add("hater@example.com", "block", "s@x.org")
    runtime = build(settings, redis_prefix=f"t:{unique}:")
    async with running(runtime):
        first = f"A{unique}"
        await send_scored(fresh_kafka, first, ["fan@example.com", "hater@example.com", "plain@example.com"], 1.0)
        records = await collect(fresh_kafka, topics.MAIL_ACTIONS, 1, key=first, timeout=20)
        action, _ = frames.unpack(records[0].value, MailAction)
        assert {d.recipient: d.fate for d in action.decisions} == {
            "fan@example.com": Fate.ACCEPT, "hater@example.com": Fate.QUARANTINE, "plain@example.com": Fate.ACCEPT}

        # A new rule set published to mailgw.config is applied by the running service.
        rules = RuleSystemConfig.from_yaml("""
what: {Spammy: {objects: [{type: symbol, name: SPAMMY}]}}
actions: {Block: {objects: [{type: block}]}}
rules: [{name: No spammy, priority: 50, what: [Spammy], actions: [Block]}]
""")
        # A published version's scoring wins over the environment's: keep awaiting the same two scorers.
        await publish_config(runtime, GatewayConfig(rules=rules, scoring=Scoring(scorers=["antispam", "antivirus"])),
                             expected_version=0, comment="block SPAMMY")
        second = f"B{unique}"
        await send_scored(fresh_kafka, second, ["fan@example.com"], 1.0)
        records = await collect(fresh_kafka, topics.MAIL_ACTIONS, 1, key=second, timeout=20)
        action, _ = frames.unpack(records[0].value, MailAction)
        assert action.decisions[0].fate is Fate.BLOCK and action.decisions[0].rule == "No spammy"
        assert action.decisions[0].matched[0].objects == ["what:Spammy"]
    await client.aclose()


def test_ruleset_file_is_validated_at_build(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [{name: R, priority: 50, what: [Nope], actions: [Block]}]\n")
    with pytest.raises(ValidationError, match=r"unknown what group\(s\) \['Nope'\]"):
        build(RulesSettings(kafka_bootstrap="127.0.0.1:1", ruleset_file=str(bad), http_port=0))
    good = tmp_path / "good.yaml"
    good.write_text("actions: {Block: {objects: [{type: block}]}}\nrules: [{name: R, priority: 50, actions: [Block]}]\n")
    runtime = build(RulesSettings(kafka_bootstrap="127.0.0.1:1", ruleset_file=str(good), http_port=0))
    assert not runtime.follow_config  # a fixed file: the configuration topic does not replace it
