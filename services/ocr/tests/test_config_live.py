"""The running OCR service applies scoring.ocr_languages published to mailgw.config."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY

from mailgw_devstack.infra import free_port
from mailgw_devstack.testing import publish_config
from mailgw_libs import topics
from mailgw_libs.config.model import GatewayConfig, Scoring
from mailgw_libs.events import Verdict
from mailgw_ocr.app import build
from mailgw_ocr.settings import OcrSettings


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

        await publish_config(runtime, GatewayConfig(scoring=Scoring(ocr_languages=["eng", "deu"])),
                             expected_version=0, comment="German too")
        ok, detail = await runtime.checks["tesseract"]()
        assert ok and detail.endswith("(eng+deu)"), detail
        spam = await kafka_bus.send_mail(img.mail(images=(("offer.png", img.text()),)))
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, spam)).value)
        assert "PHRASE_PHARMA_BRANDS" in [h.name for h in verdict.symbols]

        # A language this host has not installed: the version is in force, the languages in use stay.
        refused = refusals()
        await publish_config(runtime, GatewayConfig(scoring=Scoring(ocr_languages=["eng", "xyz"])),
                             expected_version=1, comment="typo")
        assert refusals() == refused + 1
        ok, detail = await runtime.checks["tesseract"]()
        assert ok and detail.endswith("(eng+deu)"), detail
