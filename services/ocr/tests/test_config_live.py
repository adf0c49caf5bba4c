"""The running OCR service applies scoring.ocr_languages published to mailgw.config."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY

from mailgw_devstack.infra import free_port
from mailgw_libs import topics
from mailgw_libs.config.model import GatewayConfig, Scoring
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.events import Verdict
from mailgw_libs.service import ServiceRuntime
from mailgw_ocr.app import build
from mailgw_ocr.settings import OcrSettings


async def languages_in_use(runtime: ServiceRuntime, expected: str) -> str:
    """The readiness detail once it names `expected` (the callback checks the languages in a thread first)."""
    detail = ""
    for _ in range(1000):  # hang guard, not a timing assertion
        ok, detail = await runtime.checks["tesseract"]()
        if ok and detail.endswith(f"({expected})"):
            break
        await asyncio.sleep(0.01)
    return detail


def refusals() -> float:
    return REGISTRY.get_sample_value("mailgw_ocr_languages_refused_total") or 0.0


async def test_published_languages_apply_live_and_uninstalled_ones_are_refused(
        fresh_kafka: str, kafka_bus: Any, img: Any, redis_url: str, unique: str,
        started: Callable[[Any], Awaitable[None]]) -> None:
    # The environment's languages apply while mailgw.config holds no version.
    settings = OcrSettings(kafka_bootstrap=fresh_kafka, http_port=free_port(), redis_url=redis_url,
                           cache_prefix=f"test:{unique}:")
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        ok, detail = await runtime.checks["tesseract"]()
        assert ok and detail.endswith("(eng)"), detail

        store = ConfigStore(settings)
        await store.publish(GatewayConfig(scoring=Scoring(ocr_languages=["eng", "deu"])), 0, "test", "German too")
        assert (await languages_in_use(runtime, "eng+deu")).endswith("(eng+deu)")
        spam = await kafka_bus.send_mail(img.mail(images=(("offer.png", img.text()),)))
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, spam)).value)
        assert "PHRASE_PHARMA_BRANDS" in [h.name for h in verdict.symbols]

        # A language this host has not installed: the version is in force, the languages in use stay.
        refused = refusals()
        await store.publish(GatewayConfig(scoring=Scoring(ocr_languages=["eng", "xyz"])), 1, "test", "typo")
        for _ in range(1000):  # hang guard
            if refusals() > refused:
                break
            await asyncio.sleep(0.01)
        assert refusals() == refused + 1
        ok, detail = await runtime.checks["tesseract"]()
        assert ok and detail.endswith("(eng+deu)"), detail
