"""Test images made with Pillow at run time (text, photo-like, broken, bombs) and a Kafka helper."""

from __future__ import annotations

import io
import struct
import zlib
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

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


def pdf_with_image(image: bytes) -> bytes:
    """A one-page PDF (Pillow's writer) showing `image` (JPEG stays a DCTDecode stream)."""
    buf = io.BytesIO()
    with Image.open(io.BytesIO(image)) as picture:
        picture.convert("RGB").save(buf, "PDF")
    return buf.getvalue()


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
    pdf = staticmethod(pdf_with_image)
    spam_lines = SPAM_LINES
