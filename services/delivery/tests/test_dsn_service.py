"""DSNs through the running service: real Kafka (Tansu of the test's own), Redis and an aiosmtpd sink."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

from mailgw_libs import frames, topics
from mailgw_libs.events import DeliveryStatus

from .conftest import SinkFactory
from .support import RAW, SinkHandler, TopicReader, action, decision, publish, running, settings_for, wait_until


def status_fields(content: bytes) -> list[dict[str, str]]:
    msg = message_from_bytes(content, policy=policy.default)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    blocks = msg.get_payload()[1].get_payload()
    return [dict(b.items()) for b in blocks]


async def test_550_sends_a_dsn_to_the_sender_from_the_null_sender(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"nobody@example.com": "550 5.1.1 No such user"}))
    act = action(decision("bob@example.com"), decision("nobody@example.com"))
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(sink.handler.deliveries_to("alice@example.org")) == 1, what="the DSN")
            dsn_id = f"{act.message_id}.dsn1"
            await wait_until(lambda: len(reader.results(dsn_id)) == 1, what="the DSN's delivery result")
        finally:
            await reader.stop()

    [dsn] = sink.handler.deliveries_to("alice@example.org")
    assert dsn.mail_from == "<>" and dsn.rcpt_tos == ["alice@example.org"]
    per_message, nobody = status_fields(dsn.content)
    assert per_message["Reporting-MTA"] == "dns; delivery.test"
    assert (nobody["Final-Recipient"], nobody["Action"], nobody["Status"]) == (
        "rfc822; nobody@example.com", "failed", "5.1.1")
    assert nobody["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert b"Subject: Quarterly report" in dsn.content and b"Hello Bob" not in dsn.content
    assert [r.status for r in reader.results(dsn_id)] == [DeliveryStatus.DELIVERED]
    by_rcpt = {r.recipient: r.status for r in reader.results(act.message_id)}
    assert by_rcpt == {"bob@example.com": DeliveryStatus.DELIVERED, "nobody@example.com": DeliveryStatus.BOUNCED}
    assert len(sink.handler.deliveries_to("bob@example.com")) == 1


async def test_null_sender_gets_no_dsn_and_a_bounced_dsn_is_not_bounced(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    # The sender's own address refuses mail too: the DSN to it bounces, and nothing answers that bounce.
    sink = sinks(SinkHandler(rcpt_replies={"nobody@example.com": "550 5.1.1 No such user",
                                           "alice@example.org": "550 5.1.1 No such sender"}))
    null = action(decision("nobody@example.com"), mail_from="")
    real = action(decision("nobody@example.com"))
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            for act in (null, real):
                await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(f"{real.message_id}.dsn1")) == 1, what="the DSN's bounce")
            await asyncio.sleep(1.5)  # anything else would have arrived by now
        finally:
            await reader.stop()
    assert sink.handler.received == []
    assert [r.status for r in reader.results(null.message_id)] == [DeliveryStatus.BOUNCED]
    assert [r.status for r in reader.results(f"{real.message_id}.dsn1")] == [DeliveryStatus.BOUNCED]
    keys = {r.key for r in reader.on(topics.MAIL_DELIVERY)}
    assert keys == {null.message_id.encode(), real.message_id.encode(), f"{real.message_id}.dsn1".encode()}


async def test_queue_lifetime_exceeded_sends_a_dsn(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"bob@example.com": "451 4.2.0 Mailbox busy"}))
    act = action(decision("bob@example.com"))
    settings = settings_for(fresh_kafka, redis_url, sink.port, unique, queue_lifetime_s=2)
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(sink.handler.deliveries_to("alice@example.org")) == 1, within_s=30,
                             what="the DSN after the lifetime")
            await wait_until(lambda: len(reader.results(act.message_id)) == 3, what="the bounce result")
        finally:
            await reader.stop()
    assert [r.status for r in reader.results(act.message_id)] == [
        DeliveryStatus.DEFERRED, DeliveryStatus.DEFERRED, DeliveryStatus.BOUNCED]
    [dsn] = sink.handler.deliveries_to("alice@example.org")
    assert dsn.mail_from == "<>"
    _, bob = status_fields(dsn.content)
    assert (bob["Final-Recipient"], bob["Action"], bob["Status"]) == ("rfc822; bob@example.com", "failed", "4.4.7")
    assert bob["Diagnostic-Code"] == "smtp; 451 4.2.0 Mailbox busy"


async def test_delay_warning_is_sent_once(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"bob@example.com": "451 4.2.0 Mailbox busy"}))
    act = action(decision("bob@example.com"))
    settings = settings_for(fresh_kafka, redis_url, sink.port, unique, retry_delays_s=[1], delay_warning_s=1,
                            queue_lifetime_s=60)
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) >= 4, within_s=30, what="four attempts")
        finally:
            await reader.stop()
    [warning] = sink.handler.deliveries_to("alice@example.org")
    assert warning.mail_from == "<>"
    _, bob = status_fields(warning.content)
    assert (bob["Action"], bob["Status"]) == ("delayed", "4.2.0")
