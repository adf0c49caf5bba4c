"""Message-level OCR on the real tesseract: image spam in PNG/JPEG/GIF scored as spam, a photo not, an
image inside a PDF, inline cid: images, the text cache on the real Redis, and Bayes on the OCR text."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
import redis.asyncio as aioredis
from PIL import Image

from mailgw_devstack.infra import free_port
from mailgw_libs import topics
from mailgw_libs.bayes import RedisStore, database_name, tokenize_text
from mailgw_libs.events import SymbolHit, Verdict
from mailgw_ocr.app import build
from mailgw_ocr.cache import TextCache
from mailgw_ocr.images import ImageLimits
from mailgw_ocr.scanner import OcrScanner, hits_for
from mailgw_ocr.settings import OcrSettings
from mailgw_ocr.tesseract import Tesseract, limit_threads

SPAM_THRESHOLD = 5.0  # the rules service's default "spam" score


class CountingTesseract(Tesseract):
    """The real tesseract, counting its runs (to see the cache work)."""

    def __init__(self) -> None:
        super().__init__("eng", 20.0)
        self.runs = 0

    def read(self, image: Image.Image) -> str:
        self.runs += 1
        return super().read(image)


@pytest.fixture(scope="module", autouse=True)
def _one_omp_thread() -> None:
    limit_threads()


@pytest.fixture
def scanner() -> OcrScanner:
    return OcrScanner(ImageLimits(), Tesseract("eng", 20.0), 5)


async def verdict_hits(scanner: OcrScanner, raw: bytes) -> list[SymbolHit]:
    outcome = await scanner.scan_message(raw)
    return hits_for(outcome.reports, body_chars=outcome.body_chars)


def gif(png: bytes) -> bytes:
    buf = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(buf, "GIF")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
async def test_image_spam_is_spam(scanner: OcrScanner, img: Any, fmt: str) -> None:
    png = img.text(fmt="PNG", size=30, dejavu=True)
    data = {"PNG": png, "JPEG": img.text(fmt="JPEG", size=30, dejavu=True), "GIF": gif(png)}[fmt]
    raw = img.mail(body="", images=((f"offer.{fmt.lower().replace('jpeg', 'jpg')}", data),))
    hits = await verdict_hits(scanner, raw)
    names = {h.name for h in hits}
    assert {"OCR_SPAM_TEXT", "IMAGE_ONLY_MAIL"} <= names, hits
    assert sum(h.score for h in hits) >= SPAM_THRESHOLD


async def test_photo_is_not_spam(scanner: OcrScanner, img: Any) -> None:
    hits = await verdict_hits(scanner, img.mail(body="Hi Anna,\nhere is the photo from our trip to the lake, "
                                                     "the kids loved it. See you on Sunday!\n",
                                         images=(("lake.jpg", img.photo()),)))
    assert hits == []


async def test_broken_images_have_a_clear_symbol(scanner: OcrScanner, img: Any) -> None:
    raw = img.mail(images=(("corrupt.png", img.corrupt()), ("cut.jpg", img.truncated_jpeg()),
                           ("flood.png", img.pixel_flood())))
    hits = await verdict_hits(scanner, raw)
    assert sorted(h.detail.split(":")[0] for h in hits if h.name == "OCR_FAILED") == [
        "corrupt.png", "cut.jpg", "flood.png"]
    assert "IMAGE_ONLY_MAIL" not in {h.name for h in hits}  # nothing was read


async def test_image_inside_a_pdf(scanner: OcrScanner, img: Any) -> None:
    pdf = img.pdf(img.text(fmt="JPEG", size=30, dejavu=True))
    msg = EmailMessage()
    msg["Subject"] = "invoice"
    msg.set_content("Please see the attached document for details about your order today.")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="flyer.pdf")
    outcome = await scanner.scan_message(msg.as_bytes(policy=SMTP))
    assert [(r.name, r.status) for r in outcome.reports] == [("flyer.pdf p1/image", "read")]
    hits = hits_for(outcome.reports, body_chars=outcome.body_chars)
    assert "OCR_SPAM_TEXT" in {h.name for h in hits}
    assert any(h.detail.startswith("flyer.pdf p1/image: ") for h in hits if h.name.startswith("PHRASE_"))


async def test_inline_cid_image(scanner: OcrScanner, img: Any) -> None:
    msg = EmailMessage()
    msg["Subject"] = "news"
    msg.set_content("")
    msg.add_alternative('<html><body><img src="cid:promo@x"></body></html>', subtype="html")
    msg.get_payload()[1].add_related(img.text(), maintype="image", subtype="png", cid="<promo@x>")
    hits = await verdict_hits(scanner, msg.as_bytes(policy=SMTP))
    assert {"OCR_SPAM_TEXT", "IMAGE_ONLY_MAIL"} <= {h.name for h in hits}


async def test_repeated_image_is_read_once_through_the_cache(redis_url: str, unique: str, img: Any) -> None:
    client = aioredis.Redis.from_url(redis_url)
    engine = CountingTesseract()
    scanner = OcrScanner(ImageLimits(), engine, 5,
                         cache=TextCache(client, f"test:{unique}:", 60, "fp"))
    try:
        image = img.text()
        first = await scanner.scan_message(img.mail(images=(("a.png", image),)))
        second = await scanner.scan_message(img.mail(body="other text", images=(("b.png", image),)))
        assert engine.runs == 1
        assert [r.cached for r in first.reports] == [False] and [r.cached for r in second.reports] == [True]
        assert second.reports[0].text == first.reports[0].text and "VIAGRA" in first.text.upper()
        assert len(await client.keys(f"test:{unique}:text:fp:*")) == 1
    finally:
        await client.aclose()


async def test_cache_down_is_a_miss_not_an_error(img: Any) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    scanner = OcrScanner(ImageLimits(), Tesseract("eng", 20.0), 5, cache=TextCache(client, "x:", 60, "fp"))
    outcome = await scanner.scan_message(img.mail(images=(("a.png", img.text()),)))
    assert [r.status for r in outcome.reports] == ["read"]
    await client.aclose()


SPAM_TEXTS = ["cheap viagra pills online no prescription buy now", "limited time offer cheap meds pharmacy order",
              "viagra cialis discount pharmacy best price online", "buy cheap pills today special offer now"]
HAM_TEXTS = ["meeting agenda for the project review on thursday", "please find the quarterly budget report attached",
             "lunch with the team tomorrow at noon in the office", "the release notes for version two are ready"]


async def test_service_scores_ocr_text_with_bayes(fresh_kafka: str, kafka_bus: Any, img: Any, redis_url: str,
                                                  unique: str, started: Callable[[Any], Awaitable[None]]) -> None:
    """The shared Bayes database (trained here with 200 spam and 200 ham texts) gives OCR_BAYES_xx on image text,
    and the service's verdict carries the message-level symbols."""
    database = f"ocrtest-{unique}"
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, database_name(database))
    try:
        for i in range(200):
            await store.learn(f"s{i}", tokenize_text(SPAM_TEXTS[i % 4] + f" item{i}"), "spam")
            await store.learn(f"h{i}", tokenize_text(HAM_TEXTS[i % 4] + f" item{i}"), "ham")
        settings = OcrSettings(kafka_bootstrap=fresh_kafka, http_port=free_port(), redis_url=redis_url,
                               cache_prefix=f"test:{unique}:", bayes_database=database)
        runtime = build(settings)
        async with runtime.lifespan(runtime.app()):
            await started(runtime)
            spam = await kafka_bus.send_mail(img.mail(body="", images=(("offer.png", img.text()),)))
            verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, spam)).value)
        names = [h.name for h in verdict.symbols]
        assert {"OCR_SPAM_TEXT", "IMAGE_ONLY_MAIL"} <= set(names)
        bayes = [h for h in verdict.symbols if h.name.startswith("OCR_BAYES_")]
        assert len(bayes) == 1 and bayes[0].name in ("OCR_BAYES_95", "OCR_BAYES_99", "OCR_BAYES_999"), names
        assert verdict.score >= SPAM_THRESHOLD
    finally:
        keys = await client.keys(f"mailgw:bayes:{{{database_name(database)}}}:*")
        if keys:
            await client.delete(*keys)
        await client.aclose()
