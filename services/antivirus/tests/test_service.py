"""The service in-process on a broker of its own: mail.received -> clamd + layer 2 -> mail.verdicts, the DLQ,
and the verdict cache in Redis."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from mailgw_antivirus.app import build
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import Managed, free_port
from mailgw_libs import topics
from mailgw_libs.events import Verdict


def _cache_hits() -> float:
    return REGISTRY.get_sample_value("mailgw_antivirus_cache_total", {"result": "hit"}) or 0.0


async def test_verdicts_and_dead_letters(fresh_kafka: str, clamd: Managed, kafka_bus: Any, eicar: bytes,
                                         mail: Callable[..., bytes], zip_of: Callable[[str, bytes], bytes],
                                         started: Callable[[Any], Awaitable[None]]) -> None:
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_host="127.0.0.1", clamd_port=clamd.port,
                                 http_port=free_port(), cache_enabled=False)
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
        # Both layers in one verdict: clamd's signature, then the attachment policy and YARA.
        assert verdict.viruses == ["Eicar-Test-Signature-NDB.UNOFFICIAL", "Mailgw.YARA_EICAR_TEST_FILE"]
        assert [h.name for h in verdict.symbols] == ["AV_VIRUS", "ARCHIVE_EXECUTABLE", "YARA_EICAR_TEST_FILE"]
        assert verdict.symbols[0].detail == "Eicar-Test-Signature-NDB.UNOFFICIAL"

        # Garbage on the same partition goes to the dead-letter topic; the message after it is still scanned.
        await kafka_bus.send(topics.MAIL_RECEIVED, b"this is not a frame", "garbage-1")
        clean = await kafka_bus.send_mail(mail())
        dead = await kafka_bus.read(topics.dead_letter(topics.MAIL_RECEIVED), "garbage-1")
        assert dead.value == b"this is not a frame"
        headers = {k: v.decode() for k, v in dead.headers}
        assert headers["x-mailgw-service"] == "antivirus" and "FrameError" in headers["x-mailgw-error"]
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, clean)).value)
        assert verdict.symbols == [] and not verdict.failed


async def test_clamd_down_gives_a_failed_verdict_that_is_not_cached(
        fresh_kafka: str, kafka_bus: Any, mail: Callable[..., bytes], redis_url: str, unique: str,
        started: Callable[[Any], Awaitable[None]]) -> None:
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_port=free_port(), clamd_timeout_s=2.0,
                                 http_port=free_port(), redis_url=redis_url, cache_prefix=f"test:{unique}:")
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        ok, _ = await runtime.checks["clamd"]()
        assert not ok
        message_id = await kafka_bus.send_mail(mail())
        verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, message_id)).value)
        assert verdict.failed and [h.name for h in verdict.symbols] == ["AV_FAIL"]
        assert f"127.0.0.1:{settings.clamd_port}" in verdict.error
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.keys(f"test:{unique}:*") == []  # a clamd failure is never cached
    finally:
        await client.aclose()


async def test_identical_messages_are_scanned_once(fresh_kafka: str, clamd: Managed, kafka_bus: Any,
                                                   redis_url: str, unique: str, eicar: bytes,
                                                   mail: Callable[..., bytes], zip_of: Callable[[str, bytes], bytes],
                                                   started: Callable[[Any], Awaitable[None]]) -> None:
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_port=clamd.port, http_port=free_port(),
                                 redis_url=redis_url, cache_prefix=f"test:{unique}:")
    raw = mail(attachments=(("invoice.pdf.exe", "application/octet-stream", b"MZ" + b"\0" * 200),
                            ("a.zip", "application/zip", zip_of("a.com", eicar))))
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)
        hits_before = _cache_hits()
        first_id = await kafka_bus.send_mail(raw)
        first = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, first_id)).value)
        second_id = await kafka_bus.send_mail(raw)
        second = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, second_id)).value)
        assert _cache_hits() == hits_before + 1
    names = [h.name for h in first.symbols]
    assert names[0] == "AV_VIRUS" and {"MIME_DOUBLE_EXTENSION", "MIME_BAD_EXTENSION", "ARCHIVE_EXECUTABLE",
                                       "YARA_EICAR_TEST_FILE"} <= set(names)
    assert second.message_id == second_id and second.symbols == first.symbols and second.viruses == first.viruses
    # The attachment inventory for the rules service, also from the cache.
    assert [(a.part_index, a.filename, a.detected_type) for a in first.attachments] == [
        (0, "", "text/plain"), (1, "invoice.pdf.exe", "application/octet-stream"),  # MZ alone is not a PE
        (2, "a.zip", "application/zip")]
    assert [m.name for m in first.attachments[2].archive_members] == ["a.com"]
    assert second.attachments == first.attachments
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = await client.keys(f"test:{unique}:verdict:*")
        assert len(keys) == 1 and 0 < await client.ttl(keys[0]) <= 24 * 3600
    finally:
        await client.aclose()


async def test_an_unreadable_cache_entry_is_a_miss(redis_url: str, unique: str) -> None:
    from mailgw_antivirus.cache import VerdictCache
    client = aioredis.Redis.from_url(redis_url)
    cache = VerdictCache(client, f"test:{unique}:", 60, "fp")
    try:
        key = cache.key(b"raw")
        for garbage in (b"not json", b'{"symbols": 5}', b'{"symbols": [], "viruses": [], "attachments": [{"x": 1}]}',
                        b"\xff" * 1000):
            await client.set(key, garbage)
            assert await cache.get(key) is None
    finally:
        await client.aclose()
