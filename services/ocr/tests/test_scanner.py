"""Unit tests of image selection, scoring and the async scan, with a fake tesseract."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
from PIL import Image

from mailgw_libs import mime
from mailgw_ocr.images import ImageFailed, ImageLimits
from mailgw_ocr.pdfimages import PdfLimits, pdf_images
from mailgw_ocr.scanner import ImageReport, OcrScanner, Scoring, hits_for, image_name, select_images
from mailgw_ocr.tesseract import Tesseract, TesseractMissing


class FakeTesseract(Tesseract):
    """Returns the text configured for an image's width (each test image has its own width)."""

    def __init__(self, texts: dict[int, str] | None = None, fail: Exception | None = None) -> None:
        super().__init__()
        self.texts = texts or {}
        self.fail = fail
        self.calls = 0

    def read(self, image: Image.Image) -> str:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.texts.get(image.width, "")


def png(width: int, height: int = 500) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((width, height), 60).save(buf, "PNG")
    return buf.getvalue()


def test_no_images_no_hits(img: Any) -> None:
    candidates, reports = select_images(img.mail(), ImageLimits(), 5)
    assert candidates == [] and reports == []
    assert hits_for([]) == []


def test_at_most_max_images_are_read(img: Any) -> None:
    raw = img.mail(images=tuple((f"p{i}.png", png(500 + i)) for i in range(7)))
    candidates, reports = select_images(raw, ImageLimits(), 5)
    assert [c.name for c in candidates] == [f"p{i}.png" for i in range(5)]
    assert [(r.name, r.status) for r in reports] == [("p5.png", "skipped"), ("p6.png", "skipped")]
    assert "over 5 images" in reports[0].reason


def test_tracking_pixels_do_not_take_slots(img: Any) -> None:
    tiny = io.BytesIO()
    Image.new("L", (1, 1)).save(tiny, "GIF")
    pixels = tuple((f"t{i}.gif", tiny.getvalue() + bytes([i])) for i in range(6))  # distinct bytes
    raw = img.mail(images=(*pixels, ("real.png", png(500))))
    candidates, reports = select_images(raw, ImageLimits(), 5)
    assert [c.name for c in candidates] == ["real.png"]
    assert all(r.status == "skipped" for r in reports) and len(reports) == 6


def test_broken_images_take_slots(img: Any) -> None:
    raw = img.mail(images=(("a.png", img.corrupt()), ("b.png", img.pixel_flood()), ("c.png", png(500))))
    candidates, reports = select_images(raw, ImageLimits(), 2)
    assert candidates == []
    assert [(r.name, r.status) for r in reports] == [("a.png", "failed"), ("b.png", "failed"), ("c.png", "skipped")]


def test_the_same_image_is_read_once(img: Any) -> None:
    same = png(500)
    raw = img.mail(images=(("a.png", same), ("b.png", same)))
    candidates, reports = select_images(raw, ImageLimits(), 5)
    assert [c.name for c in candidates] == ["a.png"]
    assert reports[0].name == "b.png" and "same image as a.png" in reports[0].reason


def test_image_names() -> None:
    assert image_name(mime.Part("image/png", "offer.png", b""), 0) == "offer.png"
    assert image_name(mime.Part("image/png", "", b"", content_id="banner@x"), 0) == "banner@x"
    assert image_name(mime.Part("image/jpeg", "", b""), 2) == "image-3.jpeg"
    assert image_name(mime.Part("image/png", "a\r\nX-Evil: 1.png", b""), 0) == "a X-Evil: 1.png"


def test_hits_use_the_body_rules_once_per_message_with_the_image_name() -> None:
    reports = [
        ImageReport(0, "one.png", "read", text="CHEAP VIAGRA, no prescription needed"),
        ImageReport(1, "two.png", "read", text="viagra again. Limited time offer!"),
        ImageReport(2, "bad.png", "failed", reason="cannot decode image: truncated"),
        ImageReport(3, "logo.gif", "skipped", reason="tiny"),
    ]
    hits = hits_for(reports)
    assert [(h.name, h.detail) for h in hits] == [
        ("PHRASE_PHARMA_BRANDS", "one.png: VIAGRA"),
        ("PHRASE_NO_PRESCRIPTION", "one.png: no prescription needed"),
        ("PHRASE_CHEAP_MEDS", "one.png: CHEAP VIAGRA"),
        ("PHRASE_LIMITED_OFFER", "two.png: Limited time offer"),
        ("OCR_FAILED", "bad.png: cannot decode image: truncated"),
        ("OCR_SPAM_TEXT", "body rules score 8 on the text of one.png, two.png"),
    ]
    assert hits[-2].score == 0.0
    assert sum(h.score for h in hits) == pytest.approx(2.5 + 2.0 + 2.0 + 1.5 + 3.0)


def test_spam_text_threshold_and_image_only_mail() -> None:
    weak = [ImageReport(0, "a.png", "read", text="Limited time offer")]
    assert [h.name for h in hits_for(weak)] == ["PHRASE_LIMITED_OFFER"]  # 1.5 < 4: not OCR_SPAM_TEXT
    assert [h.name for h in hits_for(weak, scoring=Scoring(spam_text_threshold=1.0))] == [
        "PHRASE_LIMITED_OFFER", "OCR_SPAM_TEXT"]
    photo = [ImageReport(0, "p.jpg", "read", text="")]
    assert [h.name for h in hits_for(photo, body_chars=0)] == ["IMAGE_ONLY_MAIL"]
    assert hits_for(photo, body_chars=400) == [] and hits_for(photo) == []
    failed = [ImageReport(0, "p.jpg", "failed", reason="broken")]
    assert [h.name for h in hits_for(failed, body_chars=0)] == ["OCR_FAILED"]  # nothing read: not image-only


def test_inline_cid_parts_whatever_their_type_and_pdf_images(img: Any) -> None:
    """An inline image declared application/octet-stream without a name is still read when HTML shows it."""
    from email.message import EmailMessage
    from email.policy import SMTP
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("see below")
    msg.add_alternative('<html><body><img src="cid:banner@x"></body></html>', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(img.text(), maintype="application", subtype="octet-stream", cid="<banner@x>")
    msg.add_attachment(img.pdf(img.text(fmt="JPEG")), maintype="application", subtype="pdf", filename="flyer.pdf")
    candidates, reports = select_images(msg.as_bytes(policy=SMTP), ImageLimits(), 5, PdfLimits())
    assert reports == []
    assert [c.name for c in candidates] == ["banner@x", "flyer.pdf p1/image"]


def test_hostile_pdfs_give_no_images_and_no_exception(img: Any) -> None:
    limits = PdfLimits()
    good = img.pdf(img.text(fmt="JPEG"))
    assert len(pdf_images(good, "a.pdf", limits)) == 1
    assert pdf_images(good[: len(good) // 2], "t.pdf", limits) == []  # truncated
    assert pdf_images(b"%PDF-1.4\n" + bytes(range(256)) * 20, "g.pdf", limits) == []  # garbage
    assert pdf_images(good, "big.pdf", PdfLimits(max_pdf_bytes=100)) == []  # oversized: not opened
    flood = re.sub(rb"/Width \d+", b"/Width 99999999", good, count=1)  # declared: refused before decoding
    (refused,) = pdf_images(flood, "f.pdf", limits)
    assert refused.data == b"" and "decompression bomb" in refused.refused


async def test_scan_reads_in_parallel_and_keeps_message_order(img: Any) -> None:
    fake = FakeTesseract({501: "buy now", 502: "you have won"})
    raw = img.mail(images=(("a.png", png(501)), ("broken.png", img.corrupt()), ("b.png", png(502))))
    reports = await OcrScanner(ImageLimits(), fake, 5).scan(raw)
    assert [(r.name, r.status) for r in reports] == [("a.png", "read"), ("broken.png", "failed"), ("b.png", "read")]
    assert [h.name for h in hits_for(reports)] == ["PHRASE_ACT_NOW", "OCR_FAILED", "PHRASE_YOU_WON"]
    assert fake.calls == 2


async def test_a_tesseract_failure_fails_only_that_image(img: Any) -> None:
    fake = FakeTesseract(fail=ImageFailed("tesseract timed out after 1 s"))
    reports = await OcrScanner(ImageLimits(), fake, 5).scan(img.mail(images=(("a.png", png(500)),)))
    assert [(r.status, r.reason) for r in reports] == [("failed", "tesseract timed out after 1 s")]


async def test_missing_tesseract_is_raised_for_redelivery(img: Any) -> None:
    fake = FakeTesseract(fail=TesseractMissing("tesseract is not installed"))
    with pytest.raises(TesseractMissing):
        await OcrScanner(ImageLimits(), fake, 5).scan(img.mail(images=(("a.png", png(500)),)))


class SlowTesseract(FakeTesseract):
    """Sleeps on wide images: one slow image among quick ones."""

    def read(self, image: Image.Image) -> str:
        if image.width >= 900:
            time.sleep(1.0)
        return super().read(image)


async def test_a_slow_image_does_not_hold_the_message(img: Any) -> None:
    raw = img.mail(images=(("quick.png", png(600)), ("slow.png", png(900))))
    scanner = OcrScanner(ImageLimits(upscale_below_px=0), SlowTesseract({600: "CHEAP VIAGRA"}), 5,
                         message_timeout_s=0.3)
    reports = await scanner.scan(raw)  # the slow image is given up at 0.3 s, the quick one is read
    assert [(r.name, r.status) for r in reports] == [("quick.png", "read"), ("slow.png", "failed")]
    assert "OCR budget" in reports[1].reason
