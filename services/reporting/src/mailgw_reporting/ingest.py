"""Events to table rows: one pure function per consumed topic.

Each function takes the record's bytes (and, for dead letters, the record's place and headers) and
returns a `Batch` for one table. A malformed record raises (ValueError, FrameError, ValidationError):
the dead-letter guard sends it to `<topic>.dlq`. Frames are read without decompressing the message,
except the quarantine's, whose raw bytes are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailgw_libs import frames, topics
from mailgw_libs.events import (
    DeliveryResult,
    MailAction,
    MailReceived,
    QuarantinedMessage,
    SmtpEvent,
    SymbolHit,
    Verdict,
)

from .schema import ACTIONS, DEAD_LETTERS, DELIVERY, MESSAGES, QUARANTINE, SMTP_EVENTS, VERDICTS, Table

# The main topics this service stores, and their dead-letter topics.
CONSUMED: tuple[str, ...] = (
    topics.MAIL_RECEIVED,
    topics.MAIL_VERDICTS,
    topics.MAIL_ACTIONS,
    topics.MAIL_DELIVERY,
    topics.MAIL_QUARANTINE,
    topics.SMTP_EVENTS,
)
DEAD_LETTER_TOPICS: tuple[str, ...] = tuple(topics.dead_letter(t) for t in CONSUMED)
ALL_TOPICS: tuple[str, ...] = CONSUMED + DEAD_LETTER_TOPICS

ERROR_HEADER = "x-mailgw-error"


@dataclass(frozen=True)
class Batch:
    """Rows for one table, in the table's column order."""

    table: Table
    rows: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RecordMeta:
    """Where a record sits in the log, for the dead-letter rows."""

    topic: str
    partition: int = -1
    offset: int = -1
    key: str = ""
    timestamp_ms: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def symbol_columns(symbols: Sequence[SymbolHit]) -> list[Any]:
    """name, score and detail as three parallel arrays (highest score first)."""
    ordered = sorted(symbols, key=lambda s: s.score, reverse=True)
    return [[s.name for s in ordered], [float(s.score) for s in ordered], [s.detail for s in ordered]]


def received(data: bytes) -> Batch:
    env = frames.unpack_header(data, MailReceived)
    row = [
        env.message_id, utc(env.received_at), env.client_ip, env.client_helo, env.mail_from, list(env.rcpt_tos),
        env.direction.value, env.size, env.tls is not None, env.tls.version if env.tls else "",
        env.tls.cipher if env.tls else "", env.subject, env.header_from, env.rfc_message_id, now(),
    ]
    return Batch(MESSAGES, [row])


def verdict(data: bytes) -> Batch:
    v = Verdict.model_validate_json(data)
    row = [v.message_id, v.scorer, float(v.score), *symbol_columns(v.symbols), list(v.viruses), v.failed, v.error,
           float(v.duration_ms), now()]
    return Batch(VERDICTS, [row])


def action(data: bytes) -> Batch:
    a = frames.unpack_header(data, MailAction)
    symbols = symbol_columns(a.symbols)
    rows = [
        [
            a.message_id, d.recipient, utc(a.decided_at), utc(a.received_at), a.mail_from, a.direction.value,
            a.client_ip, a.subject, d.fate.value, d.rule, d.spam, d.quarantine_kind, d.subject_tag,
            float(a.score), *symbols, list(a.viruses), list(a.missing_scorers), list(a.failed_scorers), now(),
        ]
        for d in a.decisions
    ]
    return Batch(ACTIONS, rows)


def delivery(data: bytes) -> Batch:
    r = DeliveryResult.model_validate_json(data)
    row = [
        r.message_id, r.recipient, r.status.value, utc(r.at), r.attempt, r.smtp_code, r.smtp_response,
        utc(r.next_attempt_at) if r.next_attempt_at else None, r.relay, now(),
    ]
    return Batch(DELIVERY, [row])


def quarantined(data: bytes, max_raw_bytes: int) -> Batch:
    q, raw = frames.unpack(data, QuarantinedMessage, max_raw_bytes)
    row = [
        q.message_id, q.kind, list(q.recipients), q.mail_from, q.subject, float(q.score), *symbol_columns(q.symbols),
        list(q.viruses), q.rule, utc(q.received_at), utc(q.quarantined_at), len(raw), raw, now(),
    ]
    return Batch(QUARANTINE, [row])


def smtp_event_id(event: SmtpEvent) -> str:
    """The identity of an SMTP event: a digest of its content (a redelivery has the same one)."""
    return hashlib.sha256(event.model_dump_json().encode()).hexdigest()[:32]


def smtp_event(data: bytes) -> Batch:
    e = SmtpEvent.model_validate_json(data)
    row = [smtp_event_id(e), utc(e.at), e.client_ip, e.helo, e.mail_from, e.rcpt, e.reason, e.check, e.code,
           e.session_id, now()]
    return Batch(SMTP_EVENTS, [row])


def _int(value: str | None, default: int = -1) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def dead_letter(meta: RecordMeta, data: bytes) -> Batch:
    """Any record of a dead-letter topic is stored: its error header says why it is there."""
    h = meta.headers
    at = datetime.fromtimestamp(meta.timestamp_ms / 1000, UTC) if meta.timestamp_ms else now()
    source = h.get("x-mailgw-source-topic") or meta.topic.removesuffix(topics.DLQ_SUFFIX)
    row = [
        meta.topic, meta.partition, meta.offset, at, meta.key, h.get(ERROR_HEADER, ""), h.get("x-mailgw-service", ""),
        source, _int(h.get("x-mailgw-source-partition")), _int(h.get("x-mailgw-source-offset")), len(data), now(),
    ]
    return Batch(DEAD_LETTERS, [row])


def rows_for(meta: RecordMeta, data: bytes, max_raw_bytes: int) -> Batch:
    """The rows of one record of `meta.topic`."""
    topic = meta.topic
    if topic in DEAD_LETTER_TOPICS:
        return dead_letter(meta, data)
    if topic == topics.MAIL_RECEIVED:
        return received(data)
    if topic == topics.MAIL_VERDICTS:
        return verdict(data)
    if topic == topics.MAIL_ACTIONS:
        return action(data)
    if topic == topics.MAIL_DELIVERY:
        return delivery(data)
    if topic == topics.MAIL_QUARANTINE:
        return quarantined(data, max_raw_bytes)
    if topic == topics.SMTP_EVENTS:
        return smtp_event(data)
    raise ValueError(f"reporting does not consume topic {topic!r}")
