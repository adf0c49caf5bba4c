"""Test mail: building messages, sending them as an internet client, finding them at the sink."""

from __future__ import annotations

import contextlib
import io
import mailbox
import time
import uuid
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
import httpx
from PIL import Image, ImageDraw, ImageFont

# Built from parts so the repository never holds the EICAR string itself.
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS" + "-TEST-FILE!$H+H*").encode()
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def token() -> str:
    return uuid.uuid4().hex[:12]


def base(subject: str, to: str = "user@example.com", sender: str = "alice@sender.test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="sender.test")
    return msg


def ham(subject: str) -> bytes:
    msg = base(subject)
    msg.set_content("Hi Bob,\n\nattached are the minutes of Tuesday's meeting. See you on Friday.\n\nAlice\n")
    return msg.as_bytes()


def gtube(subject: str) -> bytes:
    msg = base(subject)
    msg.set_content(f"This is the GTUBE test:\n{GTUBE}\n")
    return msg.as_bytes()


def eicar_zip(subject: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("invoice.com", EICAR)
    msg = base(subject)
    msg.set_content("Please see the attached invoice.\n")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="invoice.zip")
    return msg.as_bytes()


def spam_image_png() -> bytes:
    font = ImageFont.load_default(size=36)
    img = Image.new("RGB", (1000, 260), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(["CHEAP VIAGRA", "NO PRESCRIPTION NEEDED", "LIMITED TIME OFFER - BUY NOW"]):
        draw.text((30, 20 + i * 80), line, fill="black", font=font)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def image_spam(subject: str) -> bytes:
    msg = base(subject)
    msg.set_content("See the picture.\n")
    msg.add_attachment(spam_image_png(), maintype="image", subtype="png", filename="offer.png")
    return msg.as_bytes()


async def send(port: int, raw: bytes, rcpts: list[str] | None = None, sender: str = "alice@sender.test",
               source: str = "127.0.0.2") -> tuple[int, str]:
    """Send as an internet client (source address other than the trusted 127.0.0.1)."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(source, 0), start_tls=False,
                           local_hostname="client.sender.test", timeout=60)
    await smtp.connect()
    try:
        await smtp.ehlo()
        await smtp.mail(sender)
        for rcpt in rcpts or ["user@example.com"]:
            await smtp.rcpt(rcpt)
        code, text = await smtp.data(raw)
        return code, text
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await smtp.quit()


def queue_id(answer: str) -> str:
    return answer.rsplit(" ", 1)[-1]


def delivered(maildir: Path, marker: str) -> list[bytes]:
    box = mailbox.Maildir(maildir, create=False) if (maildir / "new").exists() else None
    if box is None:
        return []
    return [m.as_bytes() for m in box if marker.encode() in m.as_bytes()]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    return last


def api(port: int, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", params=params, timeout=10)


def send_sync(port: int, raw: bytes, **kw: object) -> tuple[int, str]:
    import asyncio

    return asyncio.run(send(port, raw, **kw))  # type: ignore[arg-type]
