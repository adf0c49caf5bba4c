"""OCR images per second per process: the service's scanner (select, decode, preprocess, tesseract with
OMP_THREAD_LIMIT=1) on generated images, without the cache, with 1 and with 2 tesseract workers.

    .venv/bin/python bench/ocr/throughput.py [--images 24]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.policy import SMTP

from PIL import Image, ImageDraw, ImageFont

from mailgw_ocr.images import ImageLimits
from mailgw_ocr.scanner import OcrScanner
from mailgw_ocr.tesseract import Tesseract, limit_threads

LINES = ("CHEAP VIAGRA NO PRESCRIPTION NEEDED", "Limited time offer - buy now", "Order {n} today, save 80%")


def spam_image(n: int, fmt: str) -> bytes:
    """A distinct image per n (the numbers differ), as an image spam campaign with per-recipient variation."""
    font = ImageFont.load_default(size=30)
    image = Image.new("RGB", (820, 220), (255, 250, 225))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(LINES):
        draw.text((30, 30 + i * 55), line.format(n=n), fill=(170, 20, 20), font=font)
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def mail(image: bytes, name: str) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = "offer"
    msg.set_content("")
    msg.add_attachment(image, maintype="image", subtype=name.rpartition(".")[2].replace("jpg", "jpeg"), filename=name)
    return msg.as_bytes(policy=SMTP)


async def run(messages: list[bytes], workers: int) -> None:
    executor = ThreadPoolExecutor(max_workers=workers)
    scanner = OcrScanner(ImageLimits(), Tesseract("eng", 30.0), 5, executor)
    started = time.perf_counter()
    # As the service: one message at a time per partition; `workers` partitions' worth in flight.
    queue = list(messages)

    async def consumer() -> None:
        while queue:
            reports = await scanner.scan(queue.pop())
            assert reports[0].status == "read", reports

    await asyncio.gather(*(consumer() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    executor.shutdown()
    print(f"{len(messages)} images, {workers} tesseract worker(s): {len(messages) / elapsed:.2f} images/s "
          f"({elapsed / len(messages) * 1000:.0f} ms per image)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()
    limit_threads()
    ImageLimits().apply_to_pillow()
    formats = [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif")]
    messages = [mail(spam_image(n, formats[n % 3][0]), f"offer{n}.{formats[n % 3][1]}") for n in range(args.images)]
    asyncio.run(run(messages, 1))
    asyncio.run(run(messages, 2))


if __name__ == "__main__":
    main()
