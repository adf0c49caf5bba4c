"""FateApplier with fakes for the relay, the ledger and the bus: what is sent, published and retried."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mailgw_delivery.fates import FateApplier
from mailgw_delivery.relay import RecipientOutcome, Transaction
from mailgw_delivery.retry import RetrySchedule
from mailgw_libs import frames, topics
from mailgw_libs.bus import TransientError
from mailgw_libs.events import DeliveryResult, DeliveryStatus, Fate, MailAction, QuarantinedMessage, RetryEnvelope

from .support import RAW, action, decision

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
D, F, B = DeliveryStatus.DELIVERED, DeliveryStatus.DEFERRED, DeliveryStatus.BOUNCED


@dataclass
class FakeRelay:
    """Answers per recipient: (code, text); unknown recipients get 250."""

    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    sent: list[Transaction] = field(default_factory=list)
    name: str = "relay.test:25"

    async def deliver(self, transactions: Sequence[Transaction]) -> list[list[RecipientOutcome]]:
        out: list[list[RecipientOutcome]] = []
        for tx in transactions:
            self.sent.append(tx)
            outcomes = []
            for r in tx.recipients:
                code, text = self.answers.get(r, (250, "2.0.0 Ok"))
                status = D if code // 100 == 2 else B if code // 100 == 5 else F
                outcomes.append(RecipientOutcome(r, status, code, text))
            out.append(outcomes)
        return out


@dataclass
class FakeLedger:
    entries: dict[tuple[str, str], str] = field(default_factory=dict)
    down: bool = False
    events: list[str] = field(default_factory=list)

    async def delivered(self, message_id: str, recipients: Sequence[str]) -> dict[str, str]:
        if self.down:
            raise TransientError("ledger down")
        return {r: self.entries[(message_id, r)] for r in recipients if (message_id, r) in self.entries}

    async def mark(self, message_id: str, sent: Sequence[tuple[str, str]]) -> bool:
        self.events.append("mark")
        self.entries.update({(message_id, r): v for r, v in sent})
        return True


@dataclass
class Bus:
    records: list[tuple[str, str, bytes]] = field(default_factory=list)
    fail_on: str = ""
    events: list[str] | None = None

    async def publish(self, body: bytes, topic: str, key: str) -> None:
        if topic == self.fail_on:
            raise TimeoutError("broker did not acknowledge")
        if self.events is not None:
            self.events.append(f"publish {topic}")
        self.records.append((topic, key, body))

    def on(self, topic: str) -> list[bytes]:
        return [body for t, _, body in self.records if t == topic]

    def results(self) -> list[DeliveryResult]:
        return [DeliveryResult.model_validate_json(b) for b in self.on(topics.MAIL_DELIVERY)]


def applier(relay: FakeRelay, ledger: FakeLedger, bus: Bus, delays: Sequence[int] = (60, 300),
            lifetime_s: int = 3600, now: datetime = NOW) -> FateApplier:
    return FateApplier(relay, ledger, RetrySchedule.of(delays, lifetime_s), bus.publish, clock=lambda: now)


def mixed() -> MailAction:
    return action(
        decision("a@example.com", subject_tag="[SPAM]"),
        decision("b@example.com"),
        decision("c@example.com", Fate.BLOCK, rule="exe-attachment"),
        decision("d@example.com", Fate.QUARANTINE, rule="virus", quarantine_kind="virus"),
    )


async def test_each_fate_is_applied_and_every_recipient_gets_a_result() -> None:
    relay, ledger, bus = FakeRelay(), FakeLedger(), Bus()
    act = mixed()
    results = await applier(relay, ledger, bus).apply(act, RAW)
    assert {r.recipient: r.status for r in results} == {
        "a@example.com": D, "b@example.com": D, "c@example.com": DeliveryStatus.BLOCKED,
        "d@example.com": DeliveryStatus.QUARANTINED}
    assert bus.results() == results
    assert all(key == act.message_id for _, key, _ in bus.records)
    assert [tx.recipients for tx in relay.sent] == [("a@example.com",), ("b@example.com",)]
    assert relay.sent[1].message == RAW and relay.sent[0].message != RAW
    [quarantined] = bus.on(topics.MAIL_QUARANTINE)
    header, raw = frames.unpack(quarantined, QuarantinedMessage)
    assert raw == RAW and header.kind == "virus" and header.recipients == ["d@example.com"]
    assert header.quarantined_at == NOW and header.rule == "virus" and header.score == act.score
    assert set(ledger.entries) == {(act.message_id, "a@example.com"), (act.message_id, "b@example.com")}
    assert all(r.attempt == 1 and r.at == NOW for r in results)


async def test_deferred_recipients_travel_in_one_envelope_to_the_retry_topic() -> None:
    relay = FakeRelay({"a@example.com": (451, "4.3.0 later"), "b@example.com": (421, "4.4.2 timeout")})
    bus = Bus()
    act = mixed()
    results = await applier(relay, FakeLedger(), bus).apply(act, RAW)
    deferred = [r for r in results if r.status is F]
    assert {(r.recipient, r.smtp_code) for r in deferred} == {("a@example.com", 451), ("b@example.com", 421)}
    assert all(r.next_attempt_at == NOW + timedelta(seconds=60) for r in deferred)
    [frame] = bus.on(topics.retry_topic(60))
    envelope, raw = frames.unpack(frame, RetryEnvelope)
    assert raw == RAW  # the original: the changes are applied again at each attempt
    assert envelope.recipients == ["a@example.com", "b@example.com"]
    assert (envelope.attempt, envelope.first_attempt_at, envelope.not_before) == (2, NOW, NOW + timedelta(seconds=60))
    assert envelope.action == act


async def test_a_retry_uses_the_next_delay_and_keeps_the_first_attempt_time() -> None:
    relay, bus = FakeRelay({"a@example.com": (451, "4.3.0 later")}), Bus()
    first = NOW - timedelta(seconds=400)
    results = await applier(relay, FakeLedger(), bus, delays=(60, 300)).apply(
        mixed(), RAW, ["a@example.com"], attempt=3, first_attempt_at=first)
    assert [(r.recipient, r.status, r.attempt) for r in results] == [("a@example.com", F, 3)]
    [frame] = bus.on(topics.retry_topic(300))
    envelope = frames.unpack_header(frame, RetryEnvelope)
    assert (envelope.attempt, envelope.first_attempt_at) == (4, first)
    assert [tx.recipients for tx in relay.sent] == [("a@example.com",)]
    assert bus.on(topics.MAIL_QUARANTINE) == []  # a retry touches only its own recipients


async def test_past_the_queue_lifetime_a_deferral_bounces(caplog: pytest.LogCaptureFixture) -> None:
    relay, bus = FakeRelay({"a@example.com": (451, "4.3.0 later")}), Bus()
    act = action(decision("a@example.com"), mail_from="")
    with caplog.at_level(logging.WARNING, "mailgw.delivery"):
        results = await applier(relay, FakeLedger(), bus, lifetime_s=3600).apply(
            act, RAW, ["a@example.com"], attempt=7, first_attempt_at=NOW - timedelta(hours=2))
    assert [(r.status, r.smtp_code, r.smtp_response) for r in results] == [(B, 451, "queue lifetime exceeded")]
    assert not any(t.startswith("mail.retry.") for t, _, _ in bus.records)
    assert "null sender" in caplog.text


async def test_5xx_bounces_without_retry(caplog: pytest.LogCaptureFixture) -> None:
    relay, bus = FakeRelay({"a@example.com": (550, "5.1.1 No such user")}), Bus()
    with caplog.at_level(logging.WARNING, "mailgw.delivery"):
        results = await applier(relay, FakeLedger(), bus).apply(action(decision("a@example.com")), RAW)
    assert [(r.status, r.smtp_code) for r in results] == [(B, 550)]
    assert [t for t, _, _ in bus.records] == [topics.MAIL_DELIVERY]
    assert "DSN" in caplog.text


async def test_recipients_in_the_ledger_are_not_sent_again() -> None:
    act = action(decision("a@example.com"), decision("b@example.com"))
    ledger = FakeLedger({(act.message_id, "a@example.com"): "250 2.0.0 Ok: queued as X1"})
    relay, bus = FakeRelay(), Bus()
    results = await applier(relay, ledger, bus).apply(act, RAW)
    assert [tx.recipients for tx in relay.sent] == [("b@example.com",)]
    first = next(r for r in results if r.recipient == "a@example.com")
    assert (first.status, first.smtp_code, first.smtp_response) == (D, 250, "2.0.0 Ok: queued as X1")
    relay.sent.clear()
    await applier(relay, ledger, bus).apply(act, RAW)
    assert relay.sent == []
    assert [r.status for r in bus.results()] == [D] * 4


async def test_ledger_down_sends_nothing_and_raises_for_redelivery() -> None:
    relay, bus = FakeRelay(), Bus()
    with pytest.raises(TransientError):
        await applier(relay, FakeLedger(down=True), bus).apply(action(decision("a@example.com")), RAW)
    assert relay.sent == [] and bus.results() == []


async def test_the_ledger_is_written_before_the_results_and_a_failed_publish_propagates() -> None:
    relay, ledger = FakeRelay(), FakeLedger()
    bus = Bus(fail_on=topics.MAIL_DELIVERY, events=ledger.events)
    act = action(decision("a@example.com"))
    with pytest.raises(TimeoutError):
        await applier(relay, ledger, bus).apply(act, RAW)
    assert ledger.events == ["mark"]
    # The redelivered action finds the recipient in the ledger: nothing is sent twice.
    bus.fail_on = ""
    await applier(relay, ledger, bus).apply(act, RAW)
    assert len(relay.sent) == 1 and [r.status for r in bus.results()] == [D]


async def test_a_large_message_is_changed_off_the_loop_and_keeps_its_body() -> None:
    relay, bus = FakeRelay(), Bus()
    big = RAW + (b"y" * 998 + b"\r\n") * 2000  # 2 MB
    await applier(relay, FakeLedger(), bus).apply(action(decision("a@example.com", subject_tag="[T]")), big)
    [tx] = relay.sent
    assert tx.message.endswith(big[-100_000:]) and b"Subject: [T] Quarterly report" in tx.message
    assert len(tx.message) == len(big) + len(b"[T] ")
