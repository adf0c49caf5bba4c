"""OCR of the image parts of one message, and the symbol hits its text gives.

Per message: parse, pick the images worth reading (`select_images`: cheap header checks,
at most `max_images`), read them in parallel in the executor (`read_image`: decode,
preprocess, tesseract), and score each image's text with the body rules antispam uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

from mailgw_libs import mime, textrules
from mailgw_libs.events import SymbolHit

from .images import ImageFailed, ImageLimits, ImageSkipped, decode, inspect
from .tesseract import Tesseract

FAILED_SYMBOL = "OCR_FAILED"

Status = Literal["read", "failed", "skipped"]

_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class ImageReport:
    """What happened to one image part."""

    index: int
    name: str
    status: Status
    text: str = ""
    reason: str = ""
    ms: float = 0.0


@dataclass(frozen=True)
class Candidate:
    index: int
    name: str
    data: bytes


def image_name(part: mime.Part, index: int) -> str:
    """A short printable name for symbol details: the file name, else the Content-ID, else the position."""
    name = _UNSAFE_NAME.sub(" ", part.filename or part.content_id).strip()
    if not name:
        name = f"image-{index + 1}.{part.content_type.rpartition('/')[2] or 'img'}"
    return name[:80]


def select_images(raw: bytes, limits: ImageLimits, max_images: int) -> tuple[list[Candidate], list[ImageReport]]:
    """The images to read, and reports for those skipped or failed on their header. Blocking (MIME parse)."""
    candidates: list[Candidate] = []
    reports: list[ImageReport] = []
    seen: dict[bytes, str] = {}
    slots = max_images  # every image read or failed takes a slot; skipped ones do not
    for index, part in enumerate(mime.image_parts(mime.parse(raw))):
        name = image_name(part, index)
        digest = hashlib.sha256(part.payload).digest()
        if digest in seen:  # the same picture pasted many times is read once
            reports.append(ImageReport(index, name, "skipped", reason=f"same image as {seen[digest]}"))
            continue
        seen[digest] = name
        if slots <= 0:
            reports.append(ImageReport(index, name, "skipped", reason=f"over {max_images} images per message"))
            continue
        try:
            inspect(part.payload, limits)
        except ImageSkipped as exc:
            reports.append(ImageReport(index, name, "skipped", reason=str(exc)))
            continue
        except ImageFailed as exc:
            reports.append(ImageReport(index, name, "failed", reason=str(exc)))
            slots -= 1
            continue
        candidates.append(Candidate(index, name, part.payload))
        slots -= 1
    return candidates, reports


def read_image(candidate: Candidate, limits: ImageLimits, tesseract: Tesseract) -> ImageReport:
    """Decode, preprocess and OCR one image. Blocking. A bad image gives a "failed" report, never an exception
    (except TesseractMissing: that is the installation's fault, not the image's)."""
    started = time.perf_counter()
    try:
        text = tesseract.read(decode(candidate.data, limits))
    except ImageFailed as exc:
        return ImageReport(candidate.index, candidate.name, "failed", reason=str(exc),
                           ms=(time.perf_counter() - started) * 1000)
    return ImageReport(candidate.index, candidate.name, "read", text=text, ms=(time.perf_counter() - started) * 1000)


def hits_for(reports: list[ImageReport], max_text_chars: int = 100_000) -> list[SymbolHit]:
    """Body-rule hits of the text read (each rule once per message, first image wins, as in antispam),
    details prefixed with the image name; OCR_FAILED (score 0) for each image that could not be read."""
    hits: list[SymbolHit] = []
    seen: set[str] = set()
    for report in sorted(reports, key=lambda r: r.index):
        if report.status == "failed":
            hits.append(SymbolHit(name=FAILED_SYMBOL, score=0.0, detail=f"{report.name}: {report.reason}"[:300]))
        elif report.status == "read":
            for hit in textrules.score_text(report.text, max_text_chars):
                if hit.name not in seen:
                    seen.add(hit.name)
                    hits.append(SymbolHit(name=hit.name, score=hit.score, detail=f"{report.name}: {hit.detail}"[:200]))
    return hits


class OcrScanner:
    def __init__(self, limits: ImageLimits, tesseract: Tesseract, max_images: int = 5,
                 executor: Executor | None = None) -> None:
        self.limits = limits
        self.tesseract = tesseract
        self.max_images = max_images
        self.executor = executor  # None: the loop's default executor

    async def scan(self, raw: bytes) -> list[ImageReport]:
        """Reports for every image part of `raw`, in message order; the blocking work runs in the executor."""
        loop = asyncio.get_running_loop()
        candidates, reports = await loop.run_in_executor(self.executor, select_images, raw, self.limits,
                                                         self.max_images)
        read = await asyncio.gather(*(loop.run_in_executor(self.executor, read_image, c, self.limits, self.tesseract)
                                      for c in candidates))
        return sorted([*reports, *read], key=lambda r: r.index)
