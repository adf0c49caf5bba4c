"""OCR of the images of one message, and the symbol hits its text gives.

Per message: parse, pick the images worth reading (`select_images`: image parts, parts an HTML
part shows inline through `cid:`, images inside PDF attachments; cheap header checks, at most
`max_images`), look each up in the text cache by hash, read the others in parallel on the
executor (`read_image`: decode, preprocess, tesseract with a per-image timeout), and score each
image's text with the body rules antispam uses (and Bayes, when a trained database is there).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal

from mailgw_libs import mime, textrules
from mailgw_libs.events import SymbolHit

from .cache import TextCache
from .images import ImageFailed, ImageLimits, ImageSkipped, decode, inspect
from .pdfimages import PdfLimits, is_pdf, pdf_images
from .tesseract import Tesseract

FAILED_SYMBOL = "OCR_FAILED"
SPAM_TEXT_SYMBOL = "OCR_SPAM_TEXT"
IMAGE_ONLY_SYMBOL = "IMAGE_ONLY_MAIL"

_CID = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\0", b"MM\0*", b"RIFF")


@dataclass(frozen=True)
class Scoring:
    """Message-level symbols of the OCR verdict (see README)."""

    # OCR_SPAM_TEXT when the body rules on the images' text add up to this much.
    spam_text_threshold: float = 4.0
    spam_text_score: float = 3.0
    # IMAGE_ONLY_MAIL: at least one image read and at most this many characters of visible text.
    image_only_max_chars: int = 50
    image_only_score: float = 2.0

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
    cached: bool = False


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


def _inline_ids(parts: list[mime.Part]) -> set[str]:
    """Content-IDs that an HTML part shows inline (`<img src="cid:...">`)."""
    ids: set[str] = set()
    for part in parts:
        if part.content_type == "text/html":
            ids.update(m.strip("<>").lower() for m in _CID.findall(part.text()[:2_000_000]))
    return ids


def _is_image_part(part: mime.Part) -> bool:
    # The same test as mime.image_parts, on parts already parsed.
    return part.content_type in mime.IMAGE_TYPES or part.filename.lower().endswith(_IMAGE_EXTENSIONS)


def _image_sources(msg: Message, pdf_limits: PdfLimits | None) -> list[tuple[int, str, bytes, str]]:
    """(order key, name, bytes, refused reason) of every image of the message, in message order: image
    parts by type or extension, inline `cid:` parts whatever their declared type when the bytes are an
    image, and the images of PDF parts (order key = part index * 1000 + image number)."""
    parts = mime.leaf_parts(msg)
    inline = _inline_ids(parts)
    out: list[tuple[int, str, bytes, str]] = []
    pdf_budget = pdf_limits.max_images if pdf_limits is not None else 0
    for index, part in enumerate(parts):
        if _is_image_part(part) or (part.content_id.lower() in inline and part.payload.startswith(_IMAGE_MAGIC)):
            out.append((index * 1000, image_name(part, index), part.payload, ""))
        elif pdf_limits is not None and pdf_budget > 0 and is_pdf(part.content_type, part.filename, part.payload):
            limits = PdfLimits(pdf_limits.max_pdf_bytes, pdf_limits.max_pages, pdf_budget, pdf_limits.max_pixels,
                               pdf_limits.min_side_px)
            found = pdf_images(part.payload, image_name(part, index), limits)
            pdf_budget -= len(found)
            out += [(index * 1000 + k + 1, img.name[:80], img.data, img.refused) for k, img in enumerate(found)]
    return out


def select_images(raw: bytes, limits: ImageLimits, max_images: int, pdf_limits: PdfLimits | None = None
                  ) -> tuple[list[Candidate], list[ImageReport]]:
    """The images to read, and reports for those skipped or failed on their header. Blocking (MIME parse)."""
    return _select(mime.parse(raw), limits, max_images, pdf_limits)


def _select(msg: Message, limits: ImageLimits, max_images: int, pdf_limits: PdfLimits | None
            ) -> tuple[list[Candidate], list[ImageReport]]:
    candidates: list[Candidate] = []
    reports: list[ImageReport] = []
    seen: dict[bytes, str] = {}
    slots = max_images  # every image read or failed takes a slot; skipped ones do not
    for index, name, payload, refused in _image_sources(msg, pdf_limits):
        if refused:
            reports.append(ImageReport(index, name, "failed", reason=refused))
            slots -= 1
            continue
        digest = hashlib.sha256(payload).digest()
        if digest in seen:  # the same picture pasted many times is read once
            reports.append(ImageReport(index, name, "skipped", reason=f"same image as {seen[digest]}"))
            continue
        seen[digest] = name
        if slots <= 0:
            reports.append(ImageReport(index, name, "skipped", reason=f"over {max_images} images per message"))
            continue
        try:
            inspect(payload, limits)
        except ImageSkipped as exc:
            reports.append(ImageReport(index, name, "skipped", reason=str(exc)))
            continue
        except ImageFailed as exc:
            reports.append(ImageReport(index, name, "failed", reason=str(exc)))
            slots -= 1
            continue
        candidates.append(Candidate(index, name, payload))
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


def hits_for(reports: list[ImageReport], max_text_chars: int = 100_000, *, scoring: Scoring | None = None,
             body_chars: int | None = None, extra: list[SymbolHit] | None = None) -> list[SymbolHit]:
    """Body-rule hits of the text read (each rule once per message, first image wins, as in antispam),
    details prefixed with the image name; OCR_FAILED (score 0) for each image that could not be read;
    then the message-level symbols: OCR_SPAM_TEXT when the rules on the images' text reach the threshold,
    IMAGE_ONLY_MAIL when images were read and the message has (almost) no text of its own (`body_chars`:
    None = not known, no symbol); `extra` (e.g. Bayes on the text) is added as it is."""
    scoring = scoring or Scoring()
    hits: list[SymbolHit] = []
    seen: set[str] = set()
    read: list[str] = []
    for report in sorted(reports, key=lambda r: r.index):
        if report.status == "failed":
            hits.append(SymbolHit(name=FAILED_SYMBOL, score=0.0, detail=f"{report.name}: {report.reason}"[:300]))
        elif report.status == "read":
            read.append(report.name)
            for hit in textrules.score_text(report.text, max_text_chars):
                if hit.name not in seen:
                    seen.add(hit.name)
                    hits.append(SymbolHit(name=hit.name, score=hit.score, detail=f"{report.name}: {hit.detail}"[:200]))
    rules_score = sum(h.score for h in hits)
    if hits and rules_score >= scoring.spam_text_threshold:
        hits.append(SymbolHit(name=SPAM_TEXT_SYMBOL, score=scoring.spam_text_score,
                              detail=f"body rules score {rules_score:g} on the text of {', '.join(read)}"[:300]))
    if read and body_chars is not None and body_chars <= scoring.image_only_max_chars:
        hits.append(SymbolHit(name=IMAGE_ONLY_SYMBOL, score=scoring.image_only_score,
                              detail=f"{body_chars} characters of text, {len(read)} image(s) read"))
    return hits + (extra or [])


@dataclass(frozen=True)
class OcrOutcome:
    reports: list[ImageReport]
    body_chars: int  # visible characters of the message's own text parts (HTML stripped), whitespace excluded
    text: str = ""  # the text read from all images, for Bayes


def _examine(raw: bytes, limits: ImageLimits, max_images: int, pdf_limits: PdfLimits | None
             ) -> tuple[list[Candidate], list[ImageReport], int]:
    msg = mime.parse(raw)
    candidates, reports = _select(msg, limits, max_images, pdf_limits)
    body = mime.body_text(msg, 100_000)
    return candidates, reports, sum(1 for c in body if not c.isspace())


@dataclass
class OcrScanner:
    limits: ImageLimits
    tesseract: Tesseract
    max_images: int = 5
    executor: Executor | None = None  # None: the loop's default executor
    pdf_limits: PdfLimits | None = field(default_factory=PdfLimits)
    cache: TextCache | None = None
    # Called with each image's outcome: "hit" or "miss" (metrics).
    on_cache: Callable[[str], None] | None = None
    # All images of one message must be read within this (None: only the per-image tesseract timeout). An image
    # not read by then is OCR_FAILED and the verdict goes out: a message never holds its partition longer.
    message_timeout_s: float | None = None

    async def scan(self, raw: bytes) -> list[ImageReport]:
        """Reports for every image of `raw`, in message order; the blocking work runs in the executor."""
        return (await self.scan_message(raw)).reports

    async def scan_message(self, raw: bytes) -> OcrOutcome:
        loop = asyncio.get_running_loop()
        candidates, reports, body_chars = await loop.run_in_executor(
            self.executor, _examine, raw, self.limits, self.max_images, self.pdf_limits)
        read = await asyncio.gather(*(self._read_within(c) for c in candidates))
        ordered = sorted([*reports, *read], key=lambda r: r.index)
        text = "\n".join(r.text for r in ordered if r.status == "read")
        return OcrOutcome(ordered, body_chars, text)

    async def _read_within(self, candidate: Candidate) -> ImageReport:
        if self.message_timeout_s is None:
            return await self._read(candidate)
        try:
            return await asyncio.wait_for(self._read(candidate), self.message_timeout_s)
        except TimeoutError:
            # The tesseract run goes on in its worker until its own timeout; the verdict does not wait for it.
            return ImageReport(candidate.index, candidate.name, "failed",
                               reason=f"not read within the message's {self.message_timeout_s:g} s OCR budget")

    async def _read(self, candidate: Candidate) -> ImageReport:
        if self.cache is not None:
            cached = await self.cache.get(candidate.data)
            self._count("hit" if cached is not None else "miss")
            if cached is not None:
                return ImageReport(candidate.index, candidate.name, "read", text=cached, cached=True)
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(self.executor, read_image, candidate, self.limits, self.tesseract)
        if self.cache is not None and report.status == "read":
            await self.cache.put(candidate.data, report.text)
        return report

    def _count(self, result: str) -> None:
        if self.on_cache is not None:
            self.on_cache(result)

