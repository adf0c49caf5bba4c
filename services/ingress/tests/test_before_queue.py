"""Before-queue mode on a real broker: the real ingress app holds DATA until the action of the message arrives
on mail.actions (published here as the rules service would), answers 550 when every recipient is blocked,
250 otherwise, and 250 at the deadline."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from aiokafka import AIOKafkaConsumer

from mailgw_devstack.infra import free_port
from mailgw_devstack.testing import KafkaTestBus, produce, running
from mailgw_ingress.app import build
from mailgw_ingress.beforequeue import all_blocked
from mailgw_ingress.settings import IngressSettings
from mailgw_libs import frames, topics
from mailgw_libs.events import (
    Direction,
    Fate,
    MailAction,
    MailReceived,
    RecipientDecision,
    SmtpEvent,
    Verdict,
    utcnow,
)
from mailgw_libs.service import ServiceRuntime

MESSAGE = b"Subject: before queue\r\n\r\nhello\r\n"


def action_for(received: MailReceived, fates: list[Fate]) -> MailAction:
    return MailAction(message_id=received.message_id, decided_at=utcnow(), received_at=received.received_at,
                      mail_from=received.mail_from, direction=received.direction, client_ip=received.client_ip,
                      score=10.0, decisions=[RecipientDecision(recipient=r, fate=f, rule="test")
                                             for r, f in zip(received.rcpt_tos, fates, strict=True)])


def test_all_blocked() -> None:
    received = MailReceived(message_id="m", received_at=utcnow(), client_ip="127.0.0.2", mail_from="a@b",
                            rcpt_tos=["x@example.com", "y@example.com"], direction=Direction.INBOUND, size=1)
    assert all_blocked(action_for(received, [Fate.BLOCK, Fate.BLOCK]))
    assert not all_blocked(action_for(received, [Fate.BLOCK, Fate.ACCEPT]))
    assert not all_blocked(action_for(received, [Fate.QUARANTINE, Fate.BLOCK]))


async def send(port: int, rcpts: list[str]) -> tuple[int, str]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=("127.0.0.2", 0), start_tls=False,
                           local_hostname="client.test", timeout=60)
    await smtp.connect()
    try:
        await smtp.sendmail("sender@example.org", rcpts, MESSAGE)
        return 250, ""
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message
    finally:
        smtp.close()


async def reading_actions(runtime: ServiceRuntime) -> None:
    async def ready() -> None:
        while (await runtime.checks["before_queue"]())[1] != "reading mail.actions":  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(ready(), 30)


async def next_received(bootstrap: str) -> MailReceived:
    """The first mail.received frame of the test's own broker."""
    consumer = AIOKafkaConsumer(topics.MAIL_RECEIVED, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    return frames.unpack_header(record.value or b"", MailReceived)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("fates,expected", [([Fate.BLOCK, Fate.BLOCK], 550), ([Fate.BLOCK, Fate.ACCEPT], 250),
                                            (None, 250)])
async def test_before_queue_answers_from_the_rules_decision(kafka_bus: KafkaTestBus, fresh_kafka: str,
                                                            fates: list[Fate] | None, expected: int) -> None:
    settings = IngressSettings(kafka_bootstrap=fresh_kafka, smtp_port=free_port(), http_port=free_port(),
                               greylisting=False, pregreet_delay_s=0, before_queue=True,
                               before_queue_deadline_s=1.0 if fates is None else 30.0)
    runtime = build(settings)
    async with running(runtime):
        await reading_actions(runtime)
        sending = asyncio.ensure_future(send(settings.smtp_port, ["x@example.com", "y@example.com"]))
        received = await asyncio.wait_for(next_received(fresh_kafka), 30)
        if fates is not None:
            action = action_for(received, fates)
            await kafka_bus.send(topics.MAIL_ACTIONS, frames.pack(action, MESSAGE), received.message_id)
        code, message = await asyncio.wait_for(sending, 60)
        assert code == expected, message
        if expected == 550:
            assert message == f"5.7.1 Message rejected by content policy (id {received.message_id})"
            record = await asyncio.wait_for(kafka_bus.read(topics.SMTP_EVENTS, "127.0.0.2"), 30)
            event = SmtpEvent.model_validate_json(record.value or b"")
            assert (event.check, event.code) == ("before_queue", 550)


@pytest.mark.parametrize("viruses,expected", [(["Eicar-Test-Signature"], 550), ([], 250)])
async def test_before_queue_with_the_real_rules_service(fresh_kafka: str, redis_url: str, unique: str,
                                                        viruses: list[str], expected: int) -> None:
    """Ingress and the rules service in this process on one broker; the antivirus verdict is published as the
    antivirus service would. The shipped default rules block inbound viruses: the client gets the 550."""
    from mailgw_rules.app import build as build_rules
    from mailgw_rules.settings import RulesSettings

    ingress = IngressSettings(kafka_bootstrap=fresh_kafka, smtp_port=free_port(), http_port=free_port(),
                              greylisting=False, pregreet_delay_s=0, before_queue=True, before_queue_deadline_s=60)
    rules = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, scorers=["antivirus"], deadline_s=60,
                          http_port=free_port(), publish_timeout_s=5)
    ingress_runtime = build(ingress)
    async with running(build_rules(rules, redis_prefix=f"t:{unique}:")), running(ingress_runtime):
        await reading_actions(ingress_runtime)
        sending = asyncio.ensure_future(send(ingress.smtp_port, ["x@example.com", "y@example.com"]))
        received = await asyncio.wait_for(next_received(fresh_kafka), 30)
        verdict = Verdict.of(received.message_id, "antivirus", [], 1.0, viruses)
        await produce(fresh_kafka, topics.MAIL_VERDICTS, received.message_id, verdict.model_dump_json().encode())
        code, message = await asyncio.wait_for(sending, 90)
    assert code == expected, message
