"""Wiring: mail.received -> OCR of image parts -> body rules -> mail.verdicts."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import MailReceived, Verdict
from mailgw_libs.service import ServiceRuntime, setup

from .images import ImageLimits
from .scanner import OcrScanner, hits_for
from .settings import OcrSettings
from .tesseract import Tesseract, limit_threads

SERVICE = "ocr"

log = logging.getLogger("mailgw.ocr")

# Module level: registered once per process even when several runtimes are built (tests).
IMAGES = Counter("mailgw_ocr_images_total", "Image parts seen, by outcome (read, failed, skipped)", ["outcome"])
READ_SECONDS = Histogram("mailgw_ocr_image_seconds", "Decode, preprocessing and tesseract time of one image",
                         buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30))


def limits_of(settings: OcrSettings) -> ImageLimits:
    return ImageLimits(
        min_bytes=settings.min_image_bytes, min_side_px=settings.min_image_side_px,
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        upscale_below_px=settings.upscale_below_px, max_upscaled_pixels=settings.max_upscaled_pixels,
    )


def build(settings: OcrSettings, tesseract: Tesseract | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)

    limit_threads()
    limits = limits_of(settings)
    limits.apply_to_pillow()
    engine = tesseract or Tesseract(settings.languages, settings.tesseract_timeout_s)
    # Own pool: OCR must not starve the default executor (readiness checks, other to_thread calls).
    executor = ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="ocr")
    scanner = OcrScanner(limits, engine, settings.max_images, executor)

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        reports = await scanner.scan(raw)
        hits = hits_for(reports, settings.max_text_chars)
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
        return await asyncio.to_thread(engine.check)

    async def stop_executor() -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    runtime.checks["tesseract"] = tesseract_ready
    runtime.on_stop.append(stop_executor)
    return runtime
