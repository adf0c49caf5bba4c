"""Test images made with Pillow at run time (text, photo-like, broken, bombs) and a Kafka helper."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from PIL import Image, ImageDraw, ImageFont

from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, MailReceived, new_message_id, utcnow
from mailgw_libs.service import ServiceRuntime

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SPAM_LINES = ("CHEAP VIAGRA NO PRESCRIPTION NEEDED", "Limited time offer - buy now")


def font(size: int, dejavu: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if dejavu and DEJAVU.exists():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def text_image(lines: tuple[str, ...] = SPAM_LINES, fmt: str = "PNG", size: int = 32, dejavu: bool = False,
               background: tuple[int, int, int] = (255, 250, 225), ink: tuple[int, int, int] = (170, 20, 20)) -> bytes:
    """Coloured text on a tinted background, as in image spam."""
    face = font(size, dejavu)
    width = int(size * 0.7 * max(len(line) for line in lines)) + 60
    height = int(size * 1.6 * len(lines)) + 60
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((30, 30 + i * int(size * 1.6)), line, fill=ink, font=face)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


def photo_image(width: int = 800, height: int = 600) -> bytes:
    """A photo-like JPEG without text: a colour gradient with noise."""
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    image = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def pixel_flood_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid-looking PNG whose header claims width x height pixels (2.5 gigapixels by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\0" * (width + 1) * 40, 9)  # the first rows: a few KB that would inflate enormously
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    """A PNG signature followed by garbage."""
    return b"\x89PNG\r\n\x1a\n" + bytes((i * 37 + 11) % 256 for i in range(4000))


def truncated_jpeg() -> bytes:
    data = text_image(fmt="JPEG")
    return data[: len(data) // 2]


def mail(body: str = "Hello,\nsee the picture.\n", images: tuple[tuple[str, bytes], ...] = (),
         inline_html: bool = False) -> bytes:
    """A message with image attachments (filename -> bytes; the type follows the extension)."""
    msg = EmailMessage()
    msg["From"] = "sender@example.org"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "pictures"
    msg["Message-ID"] = "<ocr-test@example.org>"
    msg.set_content(body)
    if inline_html:
        msg.add_alternative("<html><body><img src=\"cid:banner\"></body></html>", subtype="html")
    for filename, data in images:
        ext = filename.rpartition(".")[2].lower()
        subtype = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "gif": "gif"}.get(ext, "octet-stream")
        maintype = "image" if subtype != "octet-stream" else "application"
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


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


@pytest.fixture(scope="session")
def img() -> type[Images]:
    return Images


class Images:
    """The generators above, as one fixture (test modules cannot import conftest under importlib mode)."""

    text = staticmethod(text_image)
    photo = staticmethod(photo_image)
    pixel_flood = staticmethod(pixel_flood_png)
    corrupt = staticmethod(corrupt_png)
    truncated_jpeg = staticmethod(truncated_jpeg)
    mail = staticmethod(mail)
    spam_lines = SPAM_LINES
