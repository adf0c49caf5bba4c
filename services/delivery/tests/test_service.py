"""The service in-process against a real Kafka (Tansu of the test's own), real Redis and an aiosmtpd sink."""

from __future__ import annotations

from mailgw_libs import frames, mime, topics
from mailgw_libs.events import DeliveryStatus, Fate, QuarantinedMessage

from .conftest import SinkFactory
from .support import (
    RAW,
    TopicReader,
    action,
    decision,
    publish,
    running,
    settings_for,
    wait_until,
)


def statuses(reader: TopicReader, message_id: str, recipient: str) -> list[DeliveryStatus]:
    return [r.status for r in reader.results(message_id) if r.recipient == recipient]


async def test_accepted_mail_arrives_with_changes_and_identical_body(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = action(
        decision("bob@example.com", headers={"X-Spam-Flag": "YES", "X-Spam-Score": "7.5"}, subject_tag="[SPAM]"),
        decision("carol@example.com"),
        decision("dave@example.com", headers={"X-Spam-Flag": "YES", "X-Spam-Score": "7.5"}, subject_tag="[SPAM]"),
    )
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 3, what="three delivery results")
        finally:
            await reader.stop()

    assert {r.recipient: r.status for r in reader.results(act.message_id)} == {
        "bob@example.com": DeliveryStatus.DELIVERED,
        "carol@example.com": DeliveryStatus.DELIVERED,
        "dave@example.com": DeliveryStatus.DELIVERED,
    }
    assert all(r.smtp_code == 250 and r.attempt == 1 for r in reader.results(act.message_id))
    # One transaction per distinct set of changes: bob and dave together, carol alone.
    assert len(sink.handler.received) == 2
    tagged = sink.handler.deliveries_to("bob@example.com")
    assert len(tagged) == 1 and sorted(tagged[0].rcpt_tos) == ["bob@example.com", "dave@example.com"]
    assert tagged[0].mail_from == "alice@example.org"
    body = mime.split_head(tagged[0].content)[2]
    msg = mime.parse(tagged[0].content)
    assert msg["X-Spam-Flag"] == "YES" and msg["X-Spam-Score"] == "7.5"
    assert msg["Subject"] == "[SPAM] Quarterly report"
    assert body == mime.split_head(RAW)[2]
    plain = sink.handler.deliveries_to("carol@example.com")
    assert len(plain) == 1 and plain[0].content == RAW


async def test_blocked_recipient_gets_nothing_and_quarantine_keeps_the_original(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = action(
        decision("bob@example.com", Fate.BLOCK, rule="block-exe"),
        decision("carol@example.com", Fate.QUARANTINE, rule="virus", quarantine_kind="virus"),
        decision("dave@example.com", Fate.QUARANTINE, rule="spam-high"),
    )
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY, topics.MAIL_QUARANTINE).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 3, what="three delivery results")
            await wait_until(lambda: len(reader.on(topics.MAIL_QUARANTINE)) == 2, what="two quarantine records")
        finally:
            await reader.stop()

    assert {r.recipient: r.status for r in reader.results(act.message_id)} == {
        "bob@example.com": DeliveryStatus.BLOCKED,
        "carol@example.com": DeliveryStatus.QUARANTINED,
        "dave@example.com": DeliveryStatus.QUARANTINED,
    }
    assert sink.handler.received == [] and sink.handler.data_commands == 0
    kinds = {}
    for record in reader.on(topics.MAIL_QUARANTINE):
        assert record.key == act.message_id.encode() and record.value is not None
        header, raw = frames.unpack(record.value, QuarantinedMessage)
        assert raw == RAW
        assert header.message_id == act.message_id and header.mail_from == "alice@example.org"
        kinds[header.kind] = (header.recipients, header.rule)
    assert kinds == {"virus": (["carol@example.com"], "virus"), "spam": (["dave@example.com"], "spam-high")}
