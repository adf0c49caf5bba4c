"""The rules service in-process on a real Kafka (Tansu) and Redis."""

from __future__ import annotations

from datetime import UTC, datetime

from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, Fate, MailAction, MailReceived, SymbolHit, Verdict
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
        # Only one verdict: decided at the deadline, antivirus missing -> quarantine.
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
        assert records[0].headers and any(h[0] == "traceparent" for h in records[0].headers)

        dead = await collect(fresh_kafka, topics.dead_letter(topics.MAIL_RECEIVED), 1, timeout=10)
        assert dead and dict(dead[0].headers)["x-mailgw-error"].startswith(b"FrameError")
