from datetime import UTC, datetime

from mailgw_antispam.app import build
from mailgw_antispam.checks import GTUBE
from mailgw_antispam.settings import AntispamSettings
from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, MailReceived, Verdict


async def test_scores_received_mail_and_dead_letters_garbage(fresh_kafka: str) -> None:
    settings = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=0)
    env = MailReceived(message_id="M1", received_at=datetime.now(UTC), client_ip="192.0.2.1", mail_from="s@x.org",
                       rcpt_tos=["a@example.com"], direction=Direction.INBOUND, size=5)
    async with running(build(settings)):
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "junk", b"\x00garbage")
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "M1", frames.pack(env, b"Subject: x\r\n\r\n" + GTUBE))
        records = await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="M1")
        verdict = Verdict.model_validate_json(records[0].value)
        assert verdict.scorer == "antispam" and "GTUBE" in {h.name for h in verdict.symbols}
        assert verdict.score >= 1000
        dead = await collect(fresh_kafka, topics.dead_letter(topics.MAIL_RECEIVED), 1)
        assert dead[0].value == b"\x00garbage"
