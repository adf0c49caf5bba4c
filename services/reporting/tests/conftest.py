"""Fixtures of the reporting tests.

chdb hosts one embedded ClickHouse per process, on one data directory at a time, and the whole
pytest run is one process: every test of this package uses the same session directory (the session
store, and the service test's own store on the same path), and keeps to its own data through
unique message ids, addresses and a time window of its own (`Scenario`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

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
    Verdict,
    new_message_id,
)
from mailgw_reporting import api, ingest
from mailgw_reporting.queries import Window
from mailgw_reporting.store import ReportStore

MAX_RAW = 30 * 1024 * 1024
_windows = itertools.count()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reporting-chdb")


@pytest.fixture(scope="session")
def chdb_url(chdb_dir: Path) -> str:
    return f"chdb://{chdb_dir}"


@pytest.fixture(scope="session")
def store(chdb_url: str) -> Iterator[ReportStore]:
    report_store = ReportStore(chdb_url)
    yield report_store
    asyncio.run(report_store.close())


@pytest.fixture
async def http(store: ReportStore) -> AsyncIterator[httpx.AsyncClient]:
    """The reporting API of `store`, in-process."""
    app = Starlette(routes=api.routes(store))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as client:
        yield client


def raw_message(subject: str = "Hello", body: str = "Hi there.") -> bytes:
    return (f"From: Alice <alice@sender.test>\r\nTo: bob@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{new_message_id()}@sender.test>\r\n\r\n{body}\r\n").encode()


@dataclass
class Scenario:
    """Builds the events of one test: its own hour (in the future, far from other tests' data and
    from the quarantine TTL), its own sender domain, and helpers to store the events."""

    base: datetime
    tag: str
    events: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def window(self) -> Window:
        return Window(self.base, self.base + timedelta(hours=1))

    @property
    def sender(self) -> str:
        return f"alice@{self.tag}.test"

    @staticmethod
    def raw(subject: str = "Hello", body: str = "Hi there.") -> bytes:
        return raw_message(subject, body)

    @staticmethod
    def iso(value: datetime) -> str:
        """How the API writes a time."""
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def rcpt(self, name: str) -> str:
        return f"{name}@{self.tag}.example"

    def at(self, seconds: float) -> datetime:
        return self.base + timedelta(seconds=seconds)

    def received(self, recipients: list[str], message_id: str | None = None, t: float = 1,
                 subject: str = "Hello", raw: bytes | None = None) -> MailReceived:
        event = MailReceived(
            message_id=message_id or new_message_id(), received_at=self.at(t), client_ip="192.0.2.10",
            client_helo="mx.sender.test", mail_from=self.sender, rcpt_tos=recipients, direction=Direction.INBOUND,
            size=len(raw or b"x"), subject=subject, header_from="Alice <alice@sender.test>",
            rfc_message_id="<abc@sender.test>",
        )
        self.events.append((topics.MAIL_RECEIVED, frames.pack(event, raw or raw_message(subject))))
        return event

    def verdict(self, message_id: str, scorer: str, hits: list[SymbolHit], viruses: list[str] | None = None) -> None:
        verdict = Verdict.of(message_id, scorer, hits, 12.5, viruses=viruses)
        self.events.append((topics.MAIL_VERDICTS, verdict.model_dump_json().encode()))

    def action(self, rx: MailReceived, fates: dict[str, Fate], spam: bool = False, score: float = 0.0,
               symbols: list[SymbolHit] | None = None, viruses: list[str] | None = None, t: float = 2,
               rule: str = "default") -> MailAction:
        decisions = [
            RecipientDecision(recipient=r, fate=f, rule=rule, spam=spam,
                              quarantine_kind=("virus" if viruses else "spam") if f == Fate.QUARANTINE else "")
            for r, f in fates.items()
        ]
        action = MailAction(
            message_id=rx.message_id, decided_at=self.at(t), received_at=rx.received_at, mail_from=rx.mail_from,
            direction=rx.direction, client_ip=rx.client_ip, subject=rx.subject, score=score, symbols=symbols or [],
            viruses=viruses or [], decisions=decisions,
        )
        self.events.append((topics.MAIL_ACTIONS, frames.pack(action, raw_message(rx.subject))))
        return action

    def delivery(self, message_id: str, recipient: str, status: DeliveryStatus, t: float = 3, attempt: int = 1,
                 code: int = 250, response: str = "2.0.0 Ok: queued") -> None:
        result = DeliveryResult(message_id=message_id, recipient=recipient, status=status, at=self.at(t),
                                attempt=attempt, smtp_code=code, smtp_response=response, relay="127.0.0.1")
        self.events.append((topics.MAIL_DELIVERY, result.model_dump_json().encode()))

    def quarantine(self, rx: MailReceived, recipients: list[str], raw: bytes, kind: str = "spam", t: float = 3,
                   score: float = 0.0, symbols: list[SymbolHit] | None = None) -> QuarantinedMessage:
        q = QuarantinedMessage(
            message_id=rx.message_id, kind=kind, recipients=recipients, mail_from=rx.mail_from, subject=rx.subject,
            score=score, symbols=symbols or [], received_at=rx.received_at, quarantined_at=self.at(t), rule="spam",
        )
        self.events.append((topics.MAIL_QUARANTINE, frames.pack(q, raw)))
        return q

    def refusal(self, rcpt: str = "", reason: str = "Relay access denied", code: int = 554, t: float = 5,
                check: str = "relay") -> SmtpEvent:
        event = SmtpEvent(at=self.at(t), client_ip="203.0.113.9", helo="bad.test", mail_from=self.sender, rcpt=rcpt,
                          reason=reason, check=check, code=code, session_id=new_message_id())
        self.events.append((topics.SMTP_EVENTS, event.model_dump_json().encode()))
        return event

    async def store_all(self, store: ReportStore, times: int = 1) -> None:
        """Stores every event `times` times (a redelivery stores the same event again)."""
        for _ in range(times):
            for topic, data in self.events:
                await store.insert(ingest.rows_for(ingest.RecordMeta(topic=topic), data, MAX_RAW))


@pytest.fixture
def scenario() -> Scenario:
    n = next(_windows)
    base = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=n)
    return Scenario(base=base, tag=f"t{n}-{new_message_id().lower()[-8:]}")
