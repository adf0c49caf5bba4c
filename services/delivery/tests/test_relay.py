"""SMTP relay client: reply codes to results, and sessions against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailgw_delivery.relay import RecipientOutcome, SmtpRelay, Transaction, status_for_code, valid_address
from mailgw_libs.events import DeliveryStatus

from .conftest import SinkFactory
from .support import RAW, SinkHandler

D, F, B = DeliveryStatus.DELIVERED, DeliveryStatus.DEFERRED, DeliveryStatus.BOUNCED


@pytest.mark.parametrize(("code", "status"), [
    (250, D), (251, D), (421, F), (450, F), (451, F), (452, F), (0, F), (354, F), (550, B), (552, B), (554, B),
])
def test_reply_codes_map_to_results(code: int, status: DeliveryStatus) -> None:
    assert status_for_code(code) is status


def test_addresses_that_cannot_go_on_the_wire() -> None:
    assert valid_address("bob@example.com") and valid_address("j\u00fcrgen@example.com")
    assert valid_address("", allow_empty=True) and not valid_address("")
    for bad in ("bob", "bob@example.com>", "<bob@example.com", "b ob@example.com", "bob@example.com\r\nRSET"):
        assert not valid_address(bad), bad


def relay_to(port: int, **kwargs: object) -> SmtpRelay:
    options: dict[str, object] = {"connect_timeout_s": 2.0, "command_timeout_s": 2.0}
    options.update(kwargs)
    return SmtpRelay("127.0.0.1", port, "delivery.test", **options)  # type: ignore[arg-type]


def summary(outcomes: list[list[RecipientOutcome]]) -> list[list[tuple[str, DeliveryStatus, int]]]:
    return [[(o.recipient, o.status, o.code) for o in tx] for tx in outcomes]


async def test_one_session_carries_several_transactions(sinks: SinkFactory) -> None:
    sink = sinks()
    other = RAW.replace(b"Subject: Quarterly report", b"Subject: [TAG] Quarterly report")
    outcomes = await relay_to(sink.port).deliver([
        Transaction("alice@example.org", ("a@example.com", "b@example.com"), RAW),
        Transaction("alice@example.org", ("c@example.com",), other),
    ])
    assert summary(outcomes) == [[("a@example.com", D, 250), ("b@example.com", D, 250)], [("c@example.com", D, 250)]]
    assert [(r.rcpt_tos, r.content) for r in sink.handler.received] == [
        (["a@example.com", "b@example.com"], RAW), (["c@example.com"], other)]


async def test_refused_recipients_do_not_stop_the_others(sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"gone@example.com": "550 5.1.1 No such user",
                                           "full@example.com": "452 4.2.2 Mailbox full"}))
    [outcome] = await relay_to(sink.port).deliver([
        Transaction("", ("gone@example.com", "a@example.com", "full@example.com"), RAW)])
    assert [(o.recipient, o.status, o.code) for o in outcome] == [
        ("gone@example.com", B, 550), ("full@example.com", F, 452), ("a@example.com", D, 250)]
    assert "No such user" in outcome[0].response
    assert [(r.mail_from, r.rcpt_tos) for r in sink.handler.received] == [("<>", ["a@example.com"])]


async def test_all_recipients_refused_sends_no_data_and_the_session_goes_on(sinks: SinkFactory) -> None:
    sink = sinks(SinkHandler(rcpt_replies={"gone@example.com": "550 5.1.1 No such user"}))
    outcomes = await relay_to(sink.port).deliver([
        Transaction("alice@example.org", ("gone@example.com",), RAW),
        Transaction("alice@example.org", ("a@example.com",), RAW),
    ])
    assert summary(outcomes) == [[("gone@example.com", B, 550)], [("a@example.com", D, 250)]]
    assert sink.handler.data_commands == 1


@pytest.mark.parametrize(("reply", "status", "code"), [
    ("451 4.3.0 Try again later", F, 451), ("554 5.7.1 Message rejected as spam", B, 554)])
async def test_data_reply_applies_to_every_accepted_recipient(
        sinks: SinkFactory, reply: str, status: DeliveryStatus, code: int) -> None:
    sink = sinks(SinkHandler(data_replies=[reply]))
    [outcome] = await relay_to(sink.port).deliver([Transaction("alice@example.org", ("a@x.com", "b@x.com"), RAW)])
    assert [(o.status, o.code) for o in outcome] == [(status, code), (status, code)]
    assert sink.handler.received == []


@pytest.mark.parametrize(("reply", "status"), [("451 4.7.1 Rate limited", F), ("553 5.7.1 Sender refused", B)])
async def test_mail_from_refused_applies_to_every_recipient(
        sinks: SinkFactory, reply: str, status: DeliveryStatus) -> None:
    sink = sinks(SinkHandler(mail_reply=reply))
    [outcome] = await relay_to(sink.port).deliver([Transaction("alice@example.org", ("a@x.com", "b@x.com"), RAW)])
    assert {o.status for o in outcome} == {status} and len(outcome) == 2


async def test_relay_down_defers_everything(closed_port: int) -> None:
    outcomes = await relay_to(closed_port).deliver([
        Transaction("alice@example.org", ("a@x.com",), RAW), Transaction("alice@example.org", ("b@x.com",), RAW)])
    assert summary(outcomes) == [[("a@x.com", F, 0)], [("b@x.com", F, 0)]]
    assert outcomes[0][0].response


async def test_a_silent_relay_times_out_and_defers() -> None:
    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        [outcome] = await relay_to(port, connect_timeout_s=0.5, command_timeout_s=0.5).deliver(
            [Transaction("alice@example.org", ("a@x.com",), RAW)])
        assert time.monotonic() - started < 3
    finally:
        server.close()
    assert [(o.status, o.code) for o in outcome] == [(F, 0)]
    assert "Timeout" in outcome[0].response


async def test_a_session_refused_with_5xx_is_still_only_deferred() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 No service here\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        [outcome] = await relay_to(server.sockets[0].getsockname()[1]).deliver(
            [Transaction("alice@example.org", ("a@x.com",), RAW)])
    finally:
        server.close()
    assert [(o.status, o.code) for o in outcome] == [(F, 554)]


async def test_starttls_required_but_not_offered_defers(sinks: SinkFactory) -> None:
    sink = sinks()
    [outcome] = await relay_to(sink.port, starttls="required").deliver(
        [Transaction("alice@example.org", ("a@x.com",), RAW)])
    assert [o.status for o in outcome] == [F] and "STARTTLS" in outcome[0].response
    assert sink.handler.received == []


async def test_invalid_and_international_addresses(sinks: SinkFactory) -> None:
    sink = sinks()
    [outcome] = await relay_to(sink.port).deliver([
        Transaction("alice@example.org", ("bad address@x.com", "j\u00fcrgen@example.com", "a@x.com"), RAW)])
    assert [(o.recipient, o.status) for o in outcome] == [
        ("bad address@x.com", B), ("j\u00fcrgen@example.com", D), ("a@x.com", D)]
    assert sink.handler.received[0].rcpt_tos == ["j\u00fcrgen@example.com", "a@x.com"]


async def test_a_session_is_reused_for_the_next_delivery(sinks: SinkFactory) -> None:
    sink = sinks()
    relay = relay_to(sink.port, reuse_s=10.0)
    for i in range(3):
        [outcome] = await relay.deliver([Transaction("alice@example.org", (f"u{i}@x.com",), RAW)])
        assert outcome[0].status is D
    await relay.close()
    assert len({r.peer for r in sink.handler.received}) == 1

    fresh = relay_to(sink.port, reuse_s=0.0)
    for i in range(2):
        await fresh.deliver([Transaction("alice@example.org", (f"v{i}@x.com",), RAW)])
    assert len({r.peer for r in sink.handler.received[3:]}) == 2


async def test_a_kept_session_closed_by_the_relay_is_replaced(sinks: SinkFactory) -> None:
    sink = sinks()
    relay = relay_to(sink.port, reuse_s=10.0)
    await relay.deliver([Transaction("alice@example.org", ("a@x.com",), RAW)])
    sink.stop()  # drops the kept connection
    restarted = sinks(sink.handler, port=sink.port)
    [outcome] = await relay.deliver([Transaction("alice@example.org", ("b@x.com",), RAW)])
    await relay.close()
    assert [(o.status, o.code) for o in outcome] == [(D, 250)]
    assert [r.rcpt_tos for r in restarted.handler.received] == [["a@x.com"], ["b@x.com"]]
    assert len({r.peer for r in restarted.handler.received}) == 2


async def test_a_session_carries_at_most_reuse_messages(sinks: SinkFactory) -> None:
    sink = sinks()
    relay = relay_to(sink.port, reuse_s=10.0, reuse_messages=2)
    for i in range(5):
        await relay.deliver([Transaction("alice@example.org", (f"u{i}@x.com",), RAW)])
    await relay.close()
    peers = [r.peer for r in sink.handler.received]
    assert peers[0] == peers[1] != peers[2] == peers[3] != peers[4]
