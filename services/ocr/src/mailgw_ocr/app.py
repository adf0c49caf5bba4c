"""Wiring: mail.received -> OCR of image parts -> body rules -> mail.verdicts.

Follows `mailgw.config` for `scoring.ocr_languages` (joined with "+"): the configuration's value once a version
is published, `MAILGW_OCR_LANGUAGES` while it holds none. A change builds a new engine, text cache (keyed by the
languages) and scanner, swapped in at once; languages tesseract does not have installed are refused (logged,
the languages in use stay) rather than failing every image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from mailgw_libs import bus, frames, topics
from mailgw_libs.bayes import BayesFilter, RedisStore, database_name, tokenize_text
from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.events import MailReceived, SymbolHit, Verdict
from mailgw_libs.failfast import make_redis
from mailgw_libs.service import ServiceRuntime, setup

from .cache import TextCache, fingerprint
from .images import ImageLimits
from .pdfimages import PdfLimits
from .scanner import OcrScanner, Scoring, hits_for
from .settings import OcrSettings
from .tesseract import Tesseract, limit_threads

SERVICE = "ocr"

log = logging.getLogger("mailgw.ocr")

# Module level: registered once per process even when several runtimes are built (tests).
IMAGES = Counter("mailgw_ocr_images_total", "Image parts seen, by outcome (read, failed, skipped)", ["outcome"])
CACHE = Counter("mailgw_ocr_cache_total", "OCR text cache lookups, by result", ["result"])
READ_SECONDS = Histogram("mailgw_ocr_image_seconds", "Decode, preprocessing and tesseract time of one image",
                         buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30))
LANGUAGES_REFUSED = Counter("mailgw_ocr_languages_refused_total",
                            "Configured OCR languages not applied because tesseract does not have them installed")


def limits_of(settings: OcrSettings) -> ImageLimits:
    return ImageLimits(
        min_bytes=settings.min_image_bytes, min_side_px=settings.min_image_side_px,
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        upscale_below_px=settings.upscale_below_px, max_upscaled_pixels=settings.max_upscaled_pixels,
    )


@dataclass(frozen=True)
class Reader:
    """What one language setting makes: the engine and the scanner (with its text cache) using it."""

    languages: str
    engine: Tesseract
    scanner: OcrScanner


def build(settings: OcrSettings, tesseract: Tesseract | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)

    limit_threads()
    limits = limits_of(settings)
    limits.apply_to_pillow()
    # Own pool: OCR must not starve the default executor (readiness checks, other to_thread calls).
    executor = ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="ocr")
    pdf_limits = PdfLimits(settings.pdf_max_bytes, settings.pdf_max_pages, settings.pdf_max_images,
                           settings.max_image_pixels, settings.min_image_side_px) if settings.pdf_enabled else None
    scoring = Scoring(settings.spam_text_threshold, settings.spam_text_score, settings.image_only_max_chars,
                      settings.image_only_score)
    redis = make_redis(settings.redis_url, settings.redis_timeout_s) \
        if settings.cache_enabled or settings.bayes_enabled else None
    bayes = BayesFilter(RedisStore(redis, database_name(settings.bayes_database))) \
        if settings.bayes_enabled and redis is not None else None
    if redis is not None:
        runtime.on_stop.append(redis.aclose)

    def prepare(languages: str) -> Reader:
        # An injected engine (tests) keeps its own languages.
        engine = tesseract or Tesseract(languages, settings.tesseract_timeout_s)
        cache: TextCache | None = None
        if settings.cache_enabled and redis is not None:
            cache = TextCache(redis, settings.cache_prefix, settings.cache_ttl_s,
                              fingerprint(engine.languages, limits, "v1"))
        scanner = OcrScanner(limits, engine, settings.max_images, executor, pdf_limits, cache,
                             lambda result: CACHE.labels(result).inc(), settings.message_timeout_s)
        return Reader(languages, engine, scanner)

    current = prepare(settings.languages)

    async def apply_config(config: GatewayConfig) -> None:
        nonlocal current
        scoring = config.scoring
        languages = "+".join(scoring.ocr_languages) if is_set(scoring, "ocr_languages") else settings.languages
        if languages == current.languages:
            return
        candidate = prepare(languages)
        ok, detail = await asyncio.to_thread(candidate.engine.check)
        if not ok:
            LANGUAGES_REFUSED.inc()
            log.error("OCR languages not applied", extra={"languages": languages, "in_use": current.languages,
                                                          "error": detail})
            return
        current = candidate
        log.info("OCR languages applied", extra={"languages": languages})

    runtime.on_config(apply_config)

    async def bayes_hits(text: str) -> list[SymbolHit]:
        """OCR_BAYES_xx from the shared Bayes database; nothing while it is untrained or Redis is away."""
        if bayes is None or len(text.strip()) < settings.bayes_min_text_chars:
            return []
        try:
            hit = await bayes.symbol(tokenize_text(text))
        except Exception as exc:  # noqa: BLE001 - Redis away or slow: Bayes is an extra opinion, never a failure
            log.warning("Bayes unavailable for OCR text", extra={"error": repr(exc)})
            return []
        return [] if hit is None else [hit.model_copy(update={"name": f"OCR_{hit.name}"})]

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        outcome = await current.scanner.scan_message(raw)
        reports = outcome.reports
        hits = hits_for(reports, settings.max_text_chars, scoring=scoring, body_chars=outcome.body_chars,
                        extra=await bayes_hits(outcome.text))
        verdict = Verdict.of(envelope.message_id, SERVICE, hits, (time.perf_counter() - started) * 1000)
        for report in reports:
            IMAGES.labels(report.status).inc()
            if report.status == "read":
                READ_SECONDS.observe(report.ms / 1000)
            elif report.status == "failed":
                log.info("image not readable", extra={"message_id": envelope.message_id, "image": report.name,
                                                      "reason": report.reason})
        await bus.publish(broker, verdict.model_dump_json().encode(), topics.MAIL_VERDICTS,
                          envelope.message_id, settings.publish_timeout_s)

    @broker.subscriber(topics.MAIL_RECEIVED, **bus.consumer_options(SERVICE, settings))
    async def on_received(msg: KafkaMessage) -> None:
        await guard.run(msg, handle)

    async def tesseract_ready() -> tuple[bool, str]:
        return await asyncio.to_thread(current.engine.check)

    async def stop_executor() -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    runtime.checks["tesseract"] = tesseract_ready
    runtime.on_stop.append(stop_executor)
    return runtime
