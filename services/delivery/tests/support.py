"""Test helpers: a controllable SMTP sink (aiosmtpd), Kafka publish/read helpers, and builders."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailgw_delivery.app import build
from mailgw_delivery.settings import DeliverySettings
from mailgw_devstack import testing
from mailgw_libs.events import (
    DeliveryResult,
    Direction,
    Fate,
    HeaderChange,
    MailAction,
    RecipientDecision,
    new_message_id,
)
from mailgw_libs.service import ServiceRuntime

RAW = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>, carol@example.com\r\n"
    b"Subject: Quarterly report\r\n"
    b"X-Spam-Flag: NO\r\n"
    b"Message-ID: <report-1@example.org>\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe, trailing spaces   \r\n"
    b"-- \r\n"
    b"Alice\r\n"
)


# --- SMTP sink -------------------------------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: tuple[str, int] = ("", 0)  # the client's address: one per SMTP connection
    tls: bool = False  # arrived over STARTTLS


@dataclass
class SinkHandler:
    """aiosmtpd handler: replies are scripted per recipient and per DATA; everything else is accepted."""

    # Reply to every MAIL FROM instead of accepting it (e.g. "451 4.7.1 Sender rate limited").
    mail_reply: str = ""
    # RCPT TO replies by recipient, for every transaction (e.g. "550 5.1.1 No such user").
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # Replies to the next DATA commands, used up one by one (e.g. ["451 4.3.0 Try again later"] * 2).
    data_replies: list[str] = field(default_factory=list)
    # LMTP: the reply after the data for these recipients (the others get 250); all are sent in one write.
    lmtp_replies: dict[str, str] = field(default_factory=dict)
    lmtp: bool = False
    received: list[Received] = field(default_factory=list)
    data_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_commands += 1
            if self.data_replies:
                return self.data_replies.pop(0)
            content = envelope.original_content
            tls = session.ssl is not None
            if self.lmtp:
                replies = [self.lmtp_replies.get(r, "250 2.0.0 delivered") for r in envelope.rcpt_tos]
                delivered = [r for r, reply in zip(envelope.rcpt_tos, replies, strict=True) if reply[:1] == "2"]
                if delivered:
                    self.received.append(Received(envelope.mail_from, delivered, bytes(content),
                                                  tuple(session.peer[:2]), tls))
                return "\r\n".join(replies)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(content),
                                          tuple(session.peer[:2]), tls))
        return "250 2.0.0 Ok: queued as TEST"

    def deliveries_to(self, recipient: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if recipient in r.rcpt_tos]


class _Controller(Controller):
    def __init__(self, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.lmtp = handler.lmtp

    def factory(self) -> SMTP:
        return LMTP(self.handler, **self.SMTP_kwargs) if self.lmtp else SMTP(self.handler, **self.SMTP_kwargs)


class Sink:
    """An in-process SMTP (or LMTP) server on <host>:<port> (its own thread and event loop); with
    `tls_context` it offers STARTTLS."""

    def __init__(self, handler: SinkHandler, port: int, tls_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.port = port
        self.host = host
        self.tls_context = tls_context
        self.controller: Controller | None = None

    def start(self) -> Sink:
        options: dict[str, Any] = {"tls_context": self.tls_context} if self.tls_context else {}
        self.controller = _Controller(self.handler, hostname=self.host, port=self.port,
                                      data_size_limit=40 * 1024 * 1024, enable_SMTPUTF8=True, **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


# --- Kafka -----------------------------------------------------------------------------------

async def publish(bootstrap: str, topic: str, value: bytes, key: str) -> None:
    await testing.produce(bootstrap, topic, key, value)


class TopicReader:
    """Reads every record of some topics from the beginning, in the background (no consumer group)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicReader:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=32 * 1024 * 1024)
        await consumer.start()
        partitions: list[TopicPartition] = []
        for topic in self.topics:
            for _ in range(50):
                found = consumer.partitions_for_topic(topic)
                if found:
                    partitions += [TopicPartition(topic, p) for p in sorted(found)]
                    break
                await consumer.topics()  # refreshes the metadata: the topic may have just been created
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                self.records += records

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def on(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.topic == topic]

    def results(self, message_id: str, topic: str = "mail.delivery") -> list[DeliveryResult]:
        return [DeliveryResult.model_validate_json(r.value) for r in self.on(topic)
                if r.value is not None and r.key == message_id.encode()]


async def wait_until(predicate: Callable[[], bool], within_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")


# --- builders --------------------------------------------------------------------------------

def decision(recipient: str, fate: Fate = Fate.ACCEPT, rule: str = "default", headers: dict[str, str] | None = None,
             subject_tag: str = "", quarantine_kind: str = "", spam: bool = False,
             remove: list[str] | None = None) -> RecipientDecision:
    return RecipientDecision(
        recipient=recipient, fate=fate, rule=rule, spam=spam, quarantine_kind=quarantine_kind,
        add_headers=[HeaderChange(name=n, value=v) for n, v in (headers or {}).items()], subject_tag=subject_tag,
        remove_headers=remove or [],
    )


def action(*decisions: RecipientDecision, mail_from: str = "alice@example.org",
           message_id: str | None = None) -> MailAction:
    now = datetime.now(UTC)
    return MailAction(
        message_id=message_id or new_message_id(), decided_at=now, received_at=now, mail_from=mail_from,
        direction=Direction.INBOUND, client_ip="192.0.2.10", subject="Quarterly report", score=1.5,
        decisions=list(decisions),
    )


def settings_for(kafka: str, redis_url: str, relay_port: int, unique: str, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka, "redis_url": redis_url, "relay_host": "127.0.0.1", "relay_port": relay_port,
        "helo_name": "delivery.test", "connect_timeout_s": 2.0, "command_timeout_s": 5.0,
        "retry_delays_s": [1, 2], "ledger_prefix": f"test:{unique}:sent:",
        "publish_timeout_s": 10.0, "http_port": 0,
        # Outbound mail (DSNs to the sender) to the same sink: no MX lookup in these tests.
        "smarthost": {"host": "127.0.0.1", "port": relay_port},
    }
    values.update(overrides)
    return DeliverySettings(**values)


@contextlib.asynccontextmanager
async def running(settings: DeliverySettings, start_within_s: float = 30.0) -> AsyncIterator[ServiceRuntime]:
    """The service in-process: lifespan entered and the broker connected (subscribers started)."""
    async with testing.running(build(settings), start_within_s) as runtime:
        yield runtime
