"""Images inside PDF attachments, extracted cheaply and within bounds (pypdf, pure Python).

Why pypdf rather than PyMuPDF: it is pure Python (no 50 MB binary wheel, BSD licence) and, for what OCR
needs here — the image XObjects of the first pages — it is fast enough: a one-page PDF with a JPEG takes
~3 ms. Only the first `max_pages` pages and at most `max_images` images are looked at; each image's
declared size is checked before pypdf decodes anything (a 100000x100000 image is refused from its
dictionary alone), and a PDF over `max_pdf_bytes` is not opened. Images come out as their encoded bytes
(JPEG as stored, others as PNG from pypdf) and then go through the same checks as attached images.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from pypdf import PdfReader

log = logging.getLogger("mailgw.ocr.pdf")

PDF_MAGIC = b"%PDF-"


@dataclass(frozen=True)
class PdfLimits:
    max_pdf_bytes: int = 10 * 1024 * 1024
    max_pages: int = 5
    max_images: int = 5
    max_pixels: int = 40_000_000
    min_side_px: int = 32


@dataclass(frozen=True)
class PdfImage:
    name: str  # "<pdf name> p<page>/<image name>"
    data: bytes  # encoded (JPEG/PNG...), or b"" when refused
    refused: str = ""  # why it was not extracted (oversized declaration): reported as a failure


def is_pdf(content_type: str, filename: str, payload: bytes) -> bool:
    return content_type == "application/pdf" or filename.lower().endswith(".pdf") or payload[:1024].find(PDF_MAGIC) >= 0


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def pdf_images(data: bytes, pdf_name: str, limits: PdfLimits) -> list[PdfImage]:
    """The images worth OCR of one PDF, in page order. Blocking; never raises (a broken PDF gives [])."""
    if len(data) > limits.max_pdf_bytes or limits.max_images <= 0:
        return []
    out: list[PdfImage] = []
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return []
        for page_no, page in enumerate(reader.pages):
            if page_no >= limits.max_pages or len(out) >= limits.max_images:
                break
            resources = page.get("/Resources")
            xobjects = resources.get_object().get("/XObject") if resources is not None else None
            if xobjects is None:
                continue
            for key, ref in xobjects.get_object().items():
                if len(out) >= limits.max_images:
                    break
                obj = ref.get_object()
                if obj.get("/Subtype") != "/Image":
                    continue
                width, height = _int(obj.get("/Width")), _int(obj.get("/Height"))
                where = f"{pdf_name} p{page_no + 1}/{str(key).lstrip('/')}"
                if width * height > limits.max_pixels:
                    out.append(PdfImage(where, b"", f"decompression bomb: {width}x{height} px declared in the PDF"))
                    continue
                if width < limits.min_side_px or height < limits.min_side_px:
                    continue  # icons and rules: not worth a slot
                out.append(PdfImage(where, page.images[key].data))
    except Exception as exc:  # noqa: BLE001 - pypdf raises anything on hostile input; the PDF is just not read
        log.info("PDF images not extracted", extra={"pdf": pdf_name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return out
