"""DSNs (RFC 3464): their content, parsed back with the email package, and when FateApplier sends one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, Message

import pytest

from mailgw_delivery.dsn import DSN_RULE, DsnBuilder, RecipientReport, enhanced_status
from mailgw_delivery.fates import FateApplier
from mailgw_delivery.retry import RetrySchedule
from mailgw_libs import frames, mime, topics
from mailgw_libs.events import Direction, Fate, MailAction, RetryEnvelope

from .support import RAW, action, decision
from .test_fates import NOW, B, Bus, F, FakeLedger, FakeRelay

BUILDER = DsnBuilder("gw.example.net")


def parse(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def status_blocks(report: EmailMessage) -> list[Message]:
    part = report.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks


@pytest.mark.parametrize(("code", "response", "status"), [
    (550, "5.1.1 No such user", "5.1.1"),
    (552, "Requested action aborted", "5.0.0"),
    (451, "4.3.0 later", "4.3.0"),
    (554, "4.3.0 inconsistent class", "5.0.0"),  # the class of the text must match the reply code
    (0, "invalid recipient address, not sent", "5.0.0"),
    (550, "5.7.1234 too many digits", "5.0.0"),
])
def test_enhanced_status(code: int, response: str, status: str) -> None:
    assert enhanced_status(code, response) == status


def test_dsn_content_parses_back() -> None:
    act = action(decision("bob@example.com"), decision("carol@example.com"))
    reports = [
        RecipientReport.bounced("bob@example.com", 550, "5.1.1 No such user", "127.0.0.1:2526"),
        RecipientReport.expired("carol@example.com", 451, "4.3.0 Try again later", "127.0.0.1:2526"),
    ]
    data = BUILDER.build(act, RAW, reports, NOW, "X.dsn1")
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"] == "alice@example.org"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.example.net"
    assert msg["Auto-Submitted"] == "auto-replied" and msg["Subject"] == "Undelivered Mail Returned to Sender"
    human, _, headers = msg.get_payload()
    assert human.get_content_type() == "text/plain"
    text = human.get_content()
    assert "<bob@example.com>: 550 5.1.1 No such user" in text and "Quarterly report" in text

    per_message, bob, carol = status_blocks(msg)
    assert per_message["Reporting-MTA"] == "dns; gw.example.net"
    assert per_message["Arrival-Date"] is not None
    assert per_message["X-Mailgw-Queue-ID"] == act.message_id
    assert dict(bob.items()) == {
        "Final-Recipient": "rfc822; bob@example.com", "Action": "failed", "Status": "5.1.1",
        "Remote-MTA": "dns; 127.0.0.1", "Diagnostic-Code": "smtp; 550 5.1.1 No such user"}
    assert (carol["Action"], carol["Status"]) == ("failed", "4.4.7")
    assert carol["Diagnostic-Code"] == "smtp; 451 4.3.0 Try again later"

    assert headers.get_content_type() == "text/rfc822-headers"
    quoted = headers.get_payload(decode=True)
    assert quoted.replace(b"\r\n", b"\n") == mime.split_head(RAW)[0].replace(b"\r\n", b"\n") + b"\n"
    assert b"Hello Bob" not in data  # never the body


def test_dsn_without_smtp_answer_and_with_an_international_recipient() -> None:
    act = action(decision("jürgen@example.com"))
    reports = [RecipientReport.bounced("jürgen@example.com", 0, "the relay does not support SMTPUTF8", "r:25")]
    msg = parse(BUILDER.build(act, RAW, reports, NOW))
    _, block = status_blocks(msg)
    assert block["Final-Recipient"] == "utf-8; j\\x{FC}rgen@example.com"  # RFC 6533 utf-8-addr-xtext
    assert block["Status"] == "5.0.0" and block["Remote-MTA"] is None
    assert block["Diagnostic-Code"] == "X-mailgw; the relay does not support SMTPUTF8"


def test_delay_warning_content() -> None:
    act = action(decision("bob@example.com"))
    reports = [RecipientReport.delayed("bob@example.com", 0, "ConnectionRefusedError", "r:25")]
    msg = parse(DsnBuilder("gw.test", delay_warning_h=4, lifetime_h=120).build(act, RAW, reports, NOW))
    assert msg["Subject"].startswith("Delayed Mail")
    _, block = status_blocks(msg)
    assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")
    assert "120 hours" in msg.get_payload()[0].get_content()


def test_8bit_headers_are_quoted() -> None:
    raw = b"Subject: caf\xc3\xa9 \xff\r\nFrom: a@b.example\r\n\r\nbody\r\n"
    act = action(decision("bob@example.com"))
    msg = parse(BUILDER.build(act, raw, [RecipientReport.bounced("bob@example.com", 550, "no", "r:25")], NOW))
    quoted = msg.get_payload()[2].get_payload(decode=True).decode()
    assert "Subject: café \ufffd" in quoted and "From: a@b.example" in quoted


# -- FateApplier ------------------------------------------------------------------------------


def with_dsn(relay: FakeRelay, ledger: FakeLedger, bus: Bus, delays: Sequence[int] = (60, 300),
             lifetime_s: int = 3600, delay_warning_s: int = 0) -> FateApplier:
    return FateApplier(relay, ledger, RetrySchedule.of(delays, lifetime_s), bus.publish, clock=lambda: NOW,
                       dsn=BUILDER, delay_warning_s=delay_warning_s)


def dsns(bus: Bus) -> list[tuple[str, MailAction, EmailMessage]]:
    out = []
    for topic, key, body in bus.records:
        if topic == topics.MAIL_ACTIONS:
            header, raw = frames.unpack(body, MailAction)
            assert key == header.message_id
            out.append((key, header, parse(raw)))
    return out


async def test_5xx_sends_one_dsn_for_all_bounced_recipients_from_the_null_sender() -> None:
    relay = FakeRelay({"a@example.com": (550, "5.1.1 No such user"), "b@example.com": (554, "5.7.1 Refused")})
    bus = Bus()
    act = action(decision("a@example.com"), decision("b@example.com"), decision("c@example.com"))
    await with_dsn(relay, FakeLedger(), bus).apply(act, RAW)
    [(dsn_id, header, report)] = dsns(bus)
    assert dsn_id == f"{act.message_id}.dsn1"
    assert header.mail_from == "" and header.direction is Direction.OUTBOUND
    assert [(d.recipient, d.fate, d.rule) for d in header.decisions] == [("alice@example.org", Fate.ACCEPT, DSN_RULE)]
    assert [b["Final-Recipient"] for b in status_blocks(report)[1:]] == [
        "rfc822; a@example.com", "rfc822; b@example.com"]


async def test_null_sender_and_dsns_themselves_are_never_bounced() -> None:
    relay, bus = FakeRelay({"a@example.com": (550, "5.1.1 No such user")}), Bus()
    await with_dsn(relay, FakeLedger(), bus).apply(action(decision("a@example.com"), mail_from=""), RAW)
    assert dsns(bus) == [] and [r.status for r in bus.results()] == [B]


async def test_lifetime_exceeded_sends_a_dsn_and_no_retry() -> None:
    relay, bus = FakeRelay({"a@example.com": (451, "4.3.0 later")}), Bus()
    act = action(decision("a@example.com"))
    await with_dsn(relay, FakeLedger(), bus).apply(act, RAW, ["a@example.com"], attempt=5,
                                                    first_attempt_at=NOW - timedelta(hours=2))
    [(dsn_id, _, report)] = dsns(bus)
    assert dsn_id == f"{act.message_id}.dsn5"
    assert status_blocks(report)[1]["Status"] == "4.4.7"
    assert not any(t.startswith("mail.retry.") for t, _, _ in bus.records)


async def test_delay_warning_once() -> None:
    relay, bus = FakeRelay({"a@example.com": (451, "4.3.0 later")}), Bus()
    act = action(decision("a@example.com"))
    applier = with_dsn(relay, FakeLedger(), bus, lifetime_s=10 * 3600, delay_warning_s=3600)
    # Young: no warning.
    await applier.apply(act, RAW, ["a@example.com"], attempt=2, first_attempt_at=NOW - timedelta(minutes=5))
    assert dsns(bus) == []
    # Old enough: one warning, and the envelope remembers it.
    await applier.apply(act, RAW, ["a@example.com"], attempt=3, first_attempt_at=NOW - timedelta(hours=2))
    [(dsn_id, _, report)] = dsns(bus)
    assert dsn_id == f"{act.message_id}.delay" and status_blocks(report)[1]["Action"] == "delayed"
    envelope = frames.unpack_header(bus.on(topics.retry_topic(300))[-1], RetryEnvelope)
    assert envelope.warned is True
    # The next retry carries warned=True: no second warning.
    await applier.apply(act, RAW, ["a@example.com"], attempt=4, first_attempt_at=NOW - timedelta(hours=3),
                        warned=True)
    assert len(dsns(bus)) == 1
    assert [r.status for r in bus.results()] == [F, F, F]


async def test_a_release_is_its_own_delivery_in_the_ledger() -> None:
    """The ledger keys a release by (message id, release id): a forced second release is sent again,
    a redelivery of one release is not."""
    relay, ledger, bus = FakeRelay(), FakeLedger(), Bus()
    original = action(decision("a@example.com"))
    await with_dsn(relay, ledger, bus).apply(original, RAW)
    first = original.model_copy(update={"release_id": "R1"})
    await with_dsn(relay, ledger, bus).apply(first, RAW)
    await with_dsn(relay, ledger, bus).apply(first, RAW)  # redelivered
    await with_dsn(relay, ledger, bus).apply(original.model_copy(update={"release_id": "R2"}), RAW)
    assert len(relay.sent) == 3
    assert set(ledger.entries) == {(original.message_id, "a@example.com"),
                                   (f"{original.message_id}.R1", "a@example.com"),
                                   (f"{original.message_id}.R2", "a@example.com")}


def test_non_ascii_sender_and_subject_are_encoded() -> None:
    act = action(decision("bob@example.com"), mail_from="jürgen@example.com").model_copy(
        update={"subject": "Grüße\r\nBcc: x@y.example"})
    data = BUILDER.build(act, RAW, [RecipientReport.bounced("bob@example.com", 550, "no", "r:25")], NOW)
    assert data.isascii()
    msg = parse(data)
    assert msg["X-Original-Subject"] == "Grüße Bcc: x@y.example" and msg["Bcc"] is None
    assert "jürgen@example.com" in str(msg["To"])
