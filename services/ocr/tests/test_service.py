"""The service in-process on a broker of its own: mail.received -> OCR -> mail.verdicts, and the DLQ."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from mailgw_devstack.infra import free_port
from mailgw_libs import topics
from mailgw_libs.events import Verdict
from mailgw_ocr.app import build
from mailgw_ocr.settings import OcrSettings


async def test_verdicts_and_dead_letters(fresh_kafka: str, kafka_bus: Any, img: Any,
                                         started: Callable[[Any], Awaitable[None]]) -> None:
    runtime = build(OcrSettings(kafka_bootstrap=fresh_kafka, http_port=free_port()))
    assert os.environ["OMP_THREAD_LIMIT"]
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        ok, detail = await runtime.checks["tesseract"]()
        assert ok, detail

        spam = await kafka_bus.send_mail(img.mail(images=(("offer.png", img.text()),
                                                          ("broken.png", img.corrupt()))))
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, spam)).value)
        assert verdict.scorer == "ocr" and verdict.message_id == spam
        names = [h.name for h in verdict.symbols]
        assert "PHRASE_PHARMA_BRANDS" in names and "OCR_FAILED" in names
        assert verdict.score >= 5 and not verdict.failed

        # Garbage on the same partition goes to the dead-letter topic; the message after it is still handled.
        await kafka_bus.send(topics.MAIL_RECEIVED, b"\x00garbage", "garbage-1")
        plain = await kafka_bus.send_mail(img.mail())
        dead = await kafka_bus.read(topics.dead_letter(topics.MAIL_RECEIVED), "garbage-1")
        headers = {k: v.decode() for k, v in dead.headers}
        assert headers["x-mailgw-service"] == "ocr" and "FrameError" in headers["x-mailgw-error"]
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, plain)).value)
        assert verdict.symbols == [] and verdict.score == 0  # no images: an empty verdict, still published
