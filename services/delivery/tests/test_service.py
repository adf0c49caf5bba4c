"""The service in-process against a real Kafka (Tansu of the test's own), real Redis and an aiosmtpd sink."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker
from prometheus_client import REGISTRY

from mailgw_delivery.app import build
from mailgw_devstack.infra import Managed, start_redis
from mailgw_libs import bus, frames, mime, topics
from mailgw_libs.events import DeliveryStatus, Fate, QuarantinedMessage

from .conftest import SinkFactory
from .support import (
    RAW,
    SinkHandler,
    TopicReader,
    action,
    decision,
    publish,
    running,
    settings_for,
    wait_until,
)


def hold_count(how: str) -> float:
    return REGISTRY.get_sample_value("mailgw_delivery_retry_holds_total", {"how": how}) or 0.0


def statuses(reader: TopicReader, message_id: str, recipient: str) -> list[DeliveryStatus]:
    return [r.status for r in reader.results(message_id) if r.recipient == recipient]


async def test_accepted_mail_arrives_with_changes_and_identical_body(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    spam = {"X-Spam-Flag": "YES", "X-Spam-Score": "7.5"}
    act = action(
        decision("bob@example.com", headers=spam, subject_tag="[SPAM]", remove=["X-Spam-Flag"]),
        decision("carol@example.com"),
        decision("dave@example.com", headers=spam, subject_tag="[SPAM]", remove=["x-spam-flag"]),
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
    assert msg.get_all("X-Spam-Flag") == ["YES"] and msg["X-Spam-Score"] == "7.5"  # the sender's "NO" is gone
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


async def test_deferred_by_451_then_delivered_exactly_once(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(data_replies=["451 4.3.0 Try again later"] * 2))
    act = action(decision("bob@example.com", subject_tag="[EXT]"))
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: DeliveryStatus.DELIVERED in statuses(reader, act.message_id, "bob@example.com"),
                             within_s=30, what="delivery after two deferrals")
        finally:
            await reader.stop()

    results = reader.results(act.message_id)
    assert [(r.status, r.attempt, r.smtp_code) for r in results] == [
        (DeliveryStatus.DEFERRED, 1, 451), (DeliveryStatus.DEFERRED, 2, 451), (DeliveryStatus.DELIVERED, 3, 250)]
    first, second, _ = results
    # Attempt 2 waited the first delay (1 s), attempt 3 the second (2 s).
    assert first.next_attempt_at is not None and second.next_attempt_at is not None
    assert 0.9 <= (first.next_attempt_at - first.at).total_seconds() <= 1.1
    assert 1.9 <= (second.next_attempt_at - second.at).total_seconds() <= 2.1
    assert second.at >= first.next_attempt_at
    assert sink.handler.data_commands == 3
    delivered = sink.handler.deliveries_to("bob@example.com")
    assert len(delivered) == 1
    assert mime.parse(delivered[0].content)["Subject"] == "[EXT] Quarterly report"
    assert mime.split_head(delivered[0].content)[2] == mime.split_head(RAW)[2]


async def test_550_for_one_recipient_bounces_it_and_delivers_the_others(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"nobody@example.com": "550 5.1.1 No such user"}))
    act = action(decision("bob@example.com"), decision("nobody@example.com"), mail_from="")
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 2, what="two delivery results")
            await asyncio.sleep(1.5)  # longer than the first retry delay: nothing else may follow
        finally:
            await reader.stop()

    by_rcpt = {r.recipient: r for r in reader.results(act.message_id)}
    assert len(reader.results(act.message_id)) == 2
    assert by_rcpt["nobody@example.com"].status is DeliveryStatus.BOUNCED
    assert by_rcpt["nobody@example.com"].smtp_code == 550
    assert "No such user" in by_rcpt["nobody@example.com"].smtp_response
    assert by_rcpt["bob@example.com"].status is DeliveryStatus.DELIVERED
    # The null sender stays the null sender.
    assert [(r.mail_from, r.rcpt_tos) for r in sink.handler.received] == [("<>", ["bob@example.com"])]


async def test_same_action_twice_is_delivered_once(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = action(decision("bob@example.com"), decision("carol@example.com", subject_tag="[X]"))
    frame = frames.pack(act, RAW)
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frame, act.message_id)
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frame, act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 4, what="results of both copies")
        finally:
            await reader.stop()

    assert {r.status for r in reader.results(act.message_id)} == {DeliveryStatus.DELIVERED}
    assert len(sink.handler.deliveries_to("bob@example.com")) == 1
    assert len(sink.handler.deliveries_to("carol@example.com")) == 1
    assert sink.handler.data_commands == 2


class FlakyPublish:
    """Makes the publishing of delivery results fail (as if Kafka did not acknowledge) while `failing`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
        self.failures = failures
        self.failed = 0
        self.real = bus.publish
        monkeypatch.setattr(bus, "publish", self.publish)

    async def publish(self, broker: KafkaBroker, body: bytes, topic: str, key: str, timeout_s: float,
                      headers: Mapping[str, str] | None = None) -> None:
        if topic == topics.MAIL_DELIVERY and self.failed < self.failures:
            self.failed += 1
            raise KafkaTimeoutError("no acknowledgement from the broker (test)")
        await self.real(broker, body, topic, key, timeout_s, headers)


async def test_action_redelivered_after_a_failed_publish_is_not_sent_again(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = sinks()
    flaky = FlakyPublish(monkeypatch, failures=2)
    act = action(decision("bob@example.com"), decision("carol@example.com", subject_tag="[X]"))
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 2, what="results after the redeliveries")
        finally:
            await reader.stop()
    assert flaky.failed == 2  # handled three times: the SMTP sends happened only the first time
    assert [r.status for r in reader.results(act.message_id)] == [DeliveryStatus.DELIVERED] * 2
    assert sink.handler.data_commands == 2
    assert len(sink.handler.deliveries_to("bob@example.com")) == 1
    assert len(sink.handler.deliveries_to("carol@example.com")) == 1


async def test_consumer_restart_before_commit_does_not_send_again(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process stops after the relay accepted the mail but before the offset was committed."""
    sink = sinks()
    flaky = FlakyPublish(monkeypatch, failures=10**6)
    act = action(decision("bob@example.com"))
    settings = settings_for(fresh_kafka, redis_url, sink.port, unique)
    async with running(settings):
        await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
        await wait_until(lambda: len(sink.handler.received) == 1 and flaky.failed >= 1, what="the send")
    flaky.failures = 0
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await wait_until(lambda: len(reader.results(act.message_id)) == 1, within_s=40,
                             what="the redelivered action's result")
        finally:
            await reader.stop()
    assert [r.status for r in reader.results(act.message_id)] == [DeliveryStatus.DELIVERED]
    assert len(sink.handler.received) == 1


async def test_redis_down_delays_delivery_without_losing_it(
        fresh_kafka: str, sinks: SinkFactory, unique: str, closed_port: int, tmp_path: Path) -> None:
    sink = sinks()
    act = action(decision("bob@example.com"))
    redis: Managed | None = None
    async with running(settings_for(fresh_kafka, f"redis://127.0.0.1:{closed_port}/0", sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await asyncio.sleep(2.5)  # several redeliveries while Redis is down
            assert reader.results(act.message_id) == [] and sink.handler.data_commands == 0
            redis = await asyncio.to_thread(start_redis, tmp_path, closed_port)
            await wait_until(lambda: len(reader.results(act.message_id)) == 1, what="delivery once Redis is up")
        finally:
            await reader.stop()
            if redis is not None:
                redis.stop()
    assert [r.status for r in reader.results(act.message_id)] == [DeliveryStatus.DELIVERED]
    assert len(sink.handler.received) == 1


async def test_relay_down_then_up_delivers_after_retry(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory, closed_port: int) -> None:
    acts = [action(decision(f"user{i}@example.com", headers={"X-Seq": str(i)})) for i in range(5)]
    async with running(settings_for(fresh_kafka, redis_url, closed_port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            for act in acts:
                await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: all(reader.results(a.message_id) for a in acts), what="first deferrals")
            sink = sinks(port=closed_port)
            await wait_until(
                lambda: all(DeliveryStatus.DELIVERED in statuses(reader, a.message_id, a.decisions[0].recipient)
                            for a in acts), within_s=30, what="deliveries after the relay came up")
        finally:
            await reader.stop()

    for act in acts:
        recipient = act.decisions[0].recipient
        results = reader.results(act.message_id)
        assert results[0].status is DeliveryStatus.DEFERRED and results[0].smtp_code == 0
        assert results[0].attempt == 1 and results[-1].status is DeliveryStatus.DELIVERED
        assert [r.status for r in results[:-1]] == [DeliveryStatus.DEFERRED] * (len(results) - 1)
        received = sink.handler.deliveries_to(recipient)
        assert len(received) == 1
        assert mime.parse(received[0].content)["X-Seq"] == recipient.removeprefix("user").split("@")[0]
    assert len(sink.handler.received) == len(acts)


async def test_queue_lifetime_exceeded_bounces(
        fresh_kafka: str, redis_url: str, unique: str, closed_port: int) -> None:
    act = action(decision("bob@example.com"))
    settings = settings_for(fresh_kafka, redis_url, closed_port, unique, queue_lifetime_s=2)
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: DeliveryStatus.BOUNCED in statuses(reader, act.message_id, "bob@example.com"),
                             within_s=30, what="the bounce")
        finally:
            await reader.stop()
    results = reader.results(act.message_id)
    # Attempt 1 at t=0 and attempt 2 at t=1 are deferred; attempt 3 at t=3 is past the 2 s lifetime.
    assert [r.status for r in results] == [DeliveryStatus.DEFERRED, DeliveryStatus.DEFERRED, DeliveryStatus.BOUNCED]
    assert results[-1].smtp_response == "queue lifetime exceeded" and results[-1].attempt == 3


async def test_garbage_goes_to_the_dead_letter_topic_and_the_next_action_is_processed(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = action(decision("bob@example.com"))
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY, topics.dead_letter(topics.MAIL_ACTIONS),
                                   topics.dead_letter(topics.retry_topic(1))).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, b"not a frame at all", act.message_id)
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW)[:-5], act.message_id)
            await publish(fresh_kafka, topics.retry_topic(1), b'{"json": "but not a frame"}', "x")
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 1, what="the valid action's result")
            await wait_until(lambda: len(reader.on(topics.dead_letter(topics.MAIL_ACTIONS))) == 2, what="2 DLQ")
            await wait_until(lambda: len(reader.on(topics.dead_letter(topics.retry_topic(1)))) == 1, what="retry DLQ")
        finally:
            await reader.stop()
    dead = reader.on(topics.dead_letter(topics.MAIL_ACTIONS))
    assert dead[0].value == b"not a frame at all"
    headers = dict(dead[0].headers)
    assert b"FrameError" in headers["x-mailgw-error"] and headers["x-mailgw-service"] == b"delivery"
    assert reader.results(act.message_id)[0].status is DeliveryStatus.DELIVERED
    assert len(sink.handler.received) == 1


async def test_readiness_reports_redis(redis_url: str, unique: str, closed_port: int) -> None:
    for url, ready in ((redis_url, True), (f"redis://127.0.0.1:{closed_port}/0", False)):
        runtime = build(settings_for(f"127.0.0.1:{closed_port}", url, closed_port, unique))
        transport = httpx.ASGITransport(app=runtime.app())  # no lifespan: Kafka is not connected
        async with httpx.AsyncClient(transport=transport, base_url="http://delivery") as client:
            response = await client.get("/readyz")
            health = await client.get("/healthz")
        checks = response.json()["checks"]
        assert checks["redis"]["ok"] is ready and checks["kafka"]["ok"] is False
        assert response.status_code == 503 and health.status_code == 200


async def test_a_retry_waiting_for_its_time_does_not_hold_up_new_actions(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(data_replies=["451 4.3.0 Try again later"]))
    waiting, later = action(decision("bob@example.com")), action(decision("carol@example.com"))
    paused_before, slept_before = hold_count("pause"), hold_count("sleep")
    async with running(settings_for(fresh_kafka, redis_url, sink.port, unique, retry_delays_s=[30])):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(waiting, RAW), waiting.message_id)
            await wait_until(lambda: len(reader.results(waiting.message_id)) == 1, what="the deferral")
            await asyncio.sleep(0.5)  # the retry record is fetched and its partition held by now
            started = asyncio.get_running_loop().time()
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(later, RAW), later.message_id)
            await wait_until(lambda: len(reader.results(later.message_id)) == 1, what="the next action")
            elapsed = asyncio.get_running_loop().time() - started
        finally:
            await reader.stop()
    assert elapsed < 15.0  # far below the 30 s the retry waits: the new action was not held up behind it
    assert hold_count("pause") > paused_before and hold_count("sleep") == slept_before  # paused, never slept
    assert [r.status for r in reader.results(waiting.message_id)] == [DeliveryStatus.DEFERRED]
    assert [r.status for r in reader.results(later.message_id)] == [DeliveryStatus.DELIVERED]
