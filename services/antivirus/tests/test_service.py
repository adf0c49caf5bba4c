"""The service in-process on a broker of its own: mail.received -> clamd -> mail.verdicts, and the DLQ."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from mailgw_antivirus.app import build
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import Managed, free_port
from mailgw_libs import topics
from mailgw_libs.events import Verdict


async def test_verdicts_and_dead_letters(fresh_kafka: str, clamd: Managed, kafka_bus: Any, eicar: bytes,
                                         mail: Callable[..., bytes], zip_of: Callable[[str, bytes], bytes],
                                         started: Callable[[Any], Awaitable[None]]) -> None:
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_host="127.0.0.1", clamd_port=clamd.port,
                                 http_port=free_port())
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        assert await runtime.checks["clamd"]() == (True, f"clamd 127.0.0.1:{clamd.port}")

        t0 = time.monotonic()
        infected = await kafka_bus.send_mail(mail(attachments=(("a.zip", "application/zip", zip_of("a.com", eicar)),)))
        record = await kafka_bus.read(topics.MAIL_VERDICTS, infected)
        print(f"\nfirst verdict {time.monotonic() - t0:.2f} s after publishing (includes the consumer group join)")
        verdict = Verdict.model_validate_json(record.value)
        assert verdict.scorer == "antivirus" and verdict.message_id == infected
        assert verdict.viruses == ["Eicar-Test-Signature-NDB.UNOFFICIAL"]
        assert [h.name for h in verdict.symbols] == ["AV_VIRUS"] and verdict.score == 1000.0

        # Garbage on the same partition goes to the dead-letter topic; the message after it is still scanned.
        await kafka_bus.send(topics.MAIL_RECEIVED, b"this is not a frame", "garbage-1")
        clean = await kafka_bus.send_mail(mail())
        dead = await kafka_bus.read(topics.dead_letter(topics.MAIL_RECEIVED), "garbage-1")
        assert dead.value == b"this is not a frame"
        headers = {k: v.decode() for k, v in dead.headers}
        assert headers["x-mailgw-service"] == "antivirus" and "FrameError" in headers["x-mailgw-error"]
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, clean)).value)
        assert verdict.symbols == [] and not verdict.failed


async def test_clamd_down_gives_a_failed_verdict(fresh_kafka: str, kafka_bus: Any, mail: Callable[..., bytes],
                                                 started: Callable[[Any], Awaitable[None]]) -> None:
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_port=free_port(), clamd_timeout_s=2.0,
                                 http_port=free_port())
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        ok, _ = await runtime.checks["clamd"]()
        assert not ok
        message_id = await kafka_bus.send_mail(mail())
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, message_id)).value)
        assert verdict.failed and [h.name for h in verdict.symbols] == ["AV_FAIL"]
        assert f"127.0.0.1:{settings.clamd_port}" in verdict.error
