"""Test data for the antivirus service: EICAR built at run time, mails with attachments, a small-stream clamd."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from mailgw_devstack.infra import Managed, free_port, spawn, wait_port
from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, MailReceived, new_message_id, utcnow
from mailgw_libs.service import ServiceRuntime

# The EICAR test file in two halves, so that no file of the repository contains it whole
# (a virus scanner on a developer machine would quarantine the test file otherwise).
_EICAR_HEAD = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$"
_EICAR_TAIL = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURES = Path(__file__).resolve().parents[3] / "deploy" / "clamav"


@pytest.fixture(scope="session")
def eicar() -> bytes:
    return (_EICAR_HEAD + _EICAR_TAIL).encode("ascii")


def make_mail(body: str = "Hello,\nplease find the file attached.\n",
              attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """An RFC 5322 message with (filename, content type, bytes) attachments, as a client would send it."""
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "test"
    msg["Message-ID"] = "<test@example.org>"
    msg.set_content(body)
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


@pytest.fixture(scope="session")
def mail() -> Callable[..., bytes]:
    return make_mail


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def zip_of() -> Callable[[str, bytes], bytes]:
    return zipped


@pytest.fixture(scope="session")
def small_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Managed]:
    """A clamd of its own whose StreamMaxLength is 1 MB, to see how a too-large stream is answered."""
    state = tmp_path_factory.mktemp("clamd-small")
    db = state / "db"
    db.mkdir()
    for sig in SIGNATURES.glob("*.ndb"):
        (db / sig.name).write_bytes(sig.read_bytes())
    port = free_port()
    log = state / "clamd.log"
    conf = state / "clamd.conf"
    conf.write_text(f"TCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\nLogFile {log}\n"
                    "Foreground true\nStreamMaxLength 1M\nMaxThreads 2\nSelfCheck 0\nBytecode false\n")
    proc = spawn("clamd", ["clamd", "-c", str(conf)], state / "clamd.out")
    server = Managed("clamd-small", port, log, proc=proc)
    try:
        wait_port(port, 60, proc, "clamd (1 MB stream limit)")
        yield server
    finally:
        server.stop()


# --- Kafka helpers for the in-process service test ------------------------------------------


class Bus:
    """A producer and readers on one test broker (`fresh_kafka`): what the rest of the gateway would do."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=32 * 1024 * 1024)
        self.consumers: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()
        for consumer in self.consumers.values():
            await consumer.stop()

    async def send_mail(self, raw: bytes, partition: int | None = 0) -> str:
        """Publish a MailReceived frame (like ingress does); returns its message id."""
        message_id = new_message_id()
        header = MailReceived(message_id=message_id, received_at=utcnow(), client_ip="127.0.0.1",
                              mail_from="sender@example.org", rcpt_tos=["rcpt@example.com"],
                              direction=Direction.INBOUND, size=len(raw))
        await self.send(topics.MAIL_RECEIVED, frames.pack(header, raw), message_id, partition)
        return message_id

    async def send(self, topic: str, value: bytes, key: str, partition: int | None = 0) -> None:
        await self.producer.send_and_wait(topic, value, key=key.encode(), partition=partition)

    async def read(self, topic: str, key: str, timeout_s: float = 30.0) -> ConsumerRecord[bytes, bytes]:
        """The first record of `topic` with this key, reading from the start."""
        if topic not in self.consumers:
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            self.consumers[topic] = consumer
        consumer = self.consumers[topic]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.decode() == key:
                        return record
        raise AssertionError(f"no record with key {key} on {topic} within {timeout_s} s")


@pytest.fixture
async def kafka_bus(fresh_kafka: str) -> AsyncIterator[Bus]:
    test_bus = Bus(fresh_kafka)
    await test_bus.start()
    yield test_bus
    await test_bus.stop()


async def wait_started(runtime: ServiceRuntime, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not runtime.started:
        if time.monotonic() > deadline:
            raise AssertionError(f"{runtime.name} did not start within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def started() -> Callable[[ServiceRuntime], Awaitable[None]]:
    return wait_started
