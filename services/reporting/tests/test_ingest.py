"""Event -> row mapping (no database)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from mailgw_libs import frames, topics
from mailgw_libs.events import (
    DeliveryResult,
    DeliveryStatus,
    Direction,
    Fate,
    MailAction,
    MailReceived,
    QuarantinedMessage,
    RecipientDecision,
    SmtpEvent,
    SymbolHit,
    TlsInfo,
    Verdict,
)
from mailgw_reporting import ingest
from mailgw_reporting.schema import ACTIONS, DEAD_LETTERS, DELIVERY, MESSAGES, QUARANTINE, SMTP_EVENTS, VERDICTS

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def row_of(batch: ingest.Batch, index: int = 0) -> dict[str, object]:
    assert all(len(r) == len(batch.table.columns) for r in batch.rows)
    return dict(zip(batch.table.column_names, batch.rows[index], strict=True))


def envelope(**kw: object) -> MailReceived:
    fields: dict[str, object] = dict(
        message_id="M1", received_at=T0, client_ip="192.0.2.1", client_helo="mx.test", mail_from="a@s.test",
        rcpt_tos=["b@d.test", "c@d.test"], direction=Direction.INBOUND, size=1234, subject="Hi",
        header_from="A <a@s.test>", rfc_message_id="<x@s.test>",
    )
    fields.update(kw)
    return MailReceived.model_validate(fields)


def test_received_reads_the_header_only() -> None:
    frame = frames.pack(envelope(tls=TlsInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")), b"raw")
    # A corrupt body proves the message is not decompressed.
    head_len = struct.unpack_from(">I", frame, len(frames.MAGIC))[0]
    corrupt = frame[: len(frames.MAGIC) + 4 + head_len] + b"not zstd at all"
    batch = ingest.rows_for(ingest.RecordMeta(topic=topics.MAIL_RECEIVED), corrupt, 1024)
    assert batch.table is MESSAGES
    row = row_of(batch)
    assert row["message_id"] == "M1"
    assert row["received_at"] == T0
    assert row["recipients"] == ["b@d.test", "c@d.test"]
    assert row["sender"] == "a@s.test"
    assert row["helo"] == "mx.test"
    assert row["direction"] == "in"
    assert row["size"] == 1234
    assert row["tls"] is True and row["tls_version"] == "TLSv1.3"
    assert row["subject"] == "Hi" and row["header_from"] == "A <a@s.test>" and row["rfc_message_id"] == "<x@s.test>"


def test_times_become_utc() -> None:
    naive = frames.pack(envelope(received_at=datetime(2030, 5, 1, 12, 0)), b"")
    assert row_of(ingest.received(naive))["received_at"] == T0
    offset = frames.pack(envelope(received_at=datetime(2030, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))), b"")
    stored = row_of(ingest.received(offset))["received_at"]
    assert stored == T0 and stored.tzinfo == UTC  # type: ignore[union-attr]


def test_verdict_symbols_as_parallel_arrays() -> None:
    hits = [SymbolHit(name="LOW", score=0.5), SymbolHit(name="HIGH", score=3.0, detail="why")]
    verdict = Verdict.of("M1", "antispam", hits, 4.2)
    row = row_of(ingest.verdict(verdict.model_dump_json().encode()))
    assert row["scorer"] == "antispam" and row["score"] == 3.5 and row["duration_ms"] == 4.2
    assert row["symbol_names"] == ["HIGH", "LOW"]
    assert row["symbol_scores"] == [3.0, 0.5]
    assert row["symbol_details"] == ["why", ""]
    assert row["failed"] is False and row["viruses"] == []
    assert ingest.verdict(verdict.model_dump_json().encode()).table is VERDICTS


def test_action_gives_one_row_per_recipient() -> None:
    action = MailAction(
        message_id="M1", decided_at=T0 + timedelta(seconds=1), received_at=T0, mail_from="a@s.test",
        direction=Direction.OUTBOUND, client_ip="192.0.2.1", subject="Hi", score=6.0,
        symbols=[SymbolHit(name="X", score=6.0)], viruses=["Eicar-Test-Signature"], missing_scorers=["ocr"],
        decisions=[
            RecipientDecision(recipient="b@d.test", fate=Fate.ACCEPT, rule="allow", spam=False),
            RecipientDecision(recipient="c@d.test", fate=Fate.QUARANTINE, rule="virus", spam=True,
                              quarantine_kind="virus"),
        ],
    )
    batch = ingest.rows_for(ingest.RecordMeta(topic=topics.MAIL_ACTIONS), frames.pack(action, b"raw"), 1024)
    assert batch.table is ACTIONS and len(batch.rows) == 2
    first, second = row_of(batch, 0), row_of(batch, 1)
    assert (first["recipient"], first["fate"], first["rule"], first["spam"]) == ("b@d.test", "accept", "allow", False)
    assert (second["fate"], second["quarantine_kind"], second["spam"]) == ("quarantine", "virus", True)
    assert second["viruses"] == ["Eicar-Test-Signature"] and second["missing_scorers"] == ["ocr"]
    assert second["decided_at"] == T0 + timedelta(seconds=1) and second["direction"] == "out"
    assert second["symbol_names"] == ["X"]


def test_delivery_row() -> None:
    result = DeliveryResult(message_id="M1", recipient="b@d.test", status=DeliveryStatus.DEFERRED, at=T0, attempt=3,
                            smtp_code=451, smtp_response="4.7.1 later", next_attempt_at=T0 + timedelta(minutes=5))
    batch = ingest.rows_for(ingest.RecordMeta(topic=topics.MAIL_DELIVERY), result.model_dump_json().encode(), 1024)
    row = row_of(batch)
    assert batch.table is DELIVERY
    assert (row["status"], row["attempt"], row["smtp_code"], row["smtp_response"]) == ("deferred", 3, 451, "4.7.1 later")
    assert row["next_attempt_at"] == T0 + timedelta(minutes=5)


def test_quarantine_keeps_the_raw_bytes() -> None:
    raw = bytes(range(256)) * 4 + b"\r\n.\r\nend"
    q = QuarantinedMessage(message_id="M1", kind="virus", recipients=["b@d.test"], mail_from="a@s.test",
                           received_at=T0, quarantined_at=T0 + timedelta(seconds=2), viruses=["Eicar"])
    batch = ingest.rows_for(ingest.RecordMeta(topic=topics.MAIL_QUARANTINE), frames.pack(q, raw), 1 << 20)
    row = row_of(batch)
    assert batch.table is QUARANTINE
    assert row["raw"] == raw and row["size"] == len(raw)
    assert row["kind"] == "virus" and row["viruses"] == ["Eicar"]
    with pytest.raises(frames.FrameError):
        ingest.quarantined(frames.pack(q, raw), max_raw_bytes=100)


def test_smtp_event_id_is_stable() -> None:
    event = SmtpEvent(at=T0, client_ip="203.0.113.1", mail_from="x@y.test", rcpt="b@d.test", reason="relay denied",
                      check="relay", code=554)
    a = row_of(ingest.smtp_event(event.model_dump_json().encode()))
    b = row_of(ingest.smtp_event(event.model_dump_json(indent=2).encode()))  # same event, other spelling
    other = SmtpEvent(at=T0, client_ip="203.0.113.2", reason="relay denied", check="relay", code=554)
    c = row_of(ingest.smtp_event(other.model_dump_json().encode()))
    assert a["event_id"] == b["event_id"] != c["event_id"]
    assert (a["check"], a["code"], a["rcpt"], a["sender"]) == ("relay", 554, "b@d.test", "x@y.test")
    assert ingest.smtp_event(event.model_dump_json().encode()).table is SMTP_EVENTS


def test_dead_letter_row_from_headers() -> None:
    meta = ingest.RecordMeta(
        topic=topics.dead_letter(topics.MAIL_VERDICTS), partition=0, offset=7, key="M9", timestamp_ms=1_900_000_000_000,
        headers={"x-mailgw-error": "ValidationError: bad", "x-mailgw-service": "rules",
                 "x-mailgw-source-topic": topics.MAIL_VERDICTS, "x-mailgw-source-partition": "2",
                 "x-mailgw-source-offset": "x"},
    )
    batch = ingest.rows_for(meta, b"garbage", 1024)
    row = row_of(batch)
    assert batch.table is DEAD_LETTERS
    assert row["topic"] == "mail.verdicts.dlq" and row["offset"] == 7 and row["key"] == "M9"
    assert row["error"] == "ValidationError: bad" and row["service"] == "rules"
    assert row["source_topic"] == topics.MAIL_VERDICTS and row["source_partition"] == 2 and row["source_offset"] == -1
    assert row["at"] == datetime.fromtimestamp(1_900_000_000, UTC) and row["size"] == 7


def test_every_consumed_topic_and_its_dead_letters() -> None:
    assert set(ingest.CONSUMED) == {topics.MAIL_RECEIVED, topics.MAIL_VERDICTS, topics.MAIL_ACTIONS,
                                    topics.MAIL_DELIVERY, topics.MAIL_QUARANTINE, topics.SMTP_EVENTS}
    assert set(ingest.ALL_TOPICS) == set(ingest.CONSUMED) | {topics.dead_letter(t) for t in ingest.CONSUMED}
    existing = {spec.name for spec in topics.all_topics()}
    assert set(ingest.ALL_TOPICS) <= existing


@pytest.mark.parametrize("topic", ingest.CONSUMED)
def test_garbage_raises(topic: str) -> None:
    with pytest.raises((ValueError, ValidationError)):
        ingest.rows_for(ingest.RecordMeta(topic=topic), b"\x00 definitely not an event", 1024)


def test_unknown_topic_raises() -> None:
    with pytest.raises(ValueError, match="does not consume"):
        ingest.rows_for(ingest.RecordMeta(topic=topics.MAIL_LEARN), b"{}", 1024)
