"""Wiring: mail.received -> clamd INSTREAM scan -> mail.verdicts."""

from __future__ import annotations

import asyncio
import logging
import time

from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import MailReceived
from mailgw_libs.service import ServiceRuntime, setup

from .scanner import ClamdScanner, verdict_for
from .settings import AntivirusSettings

SERVICE = "antivirus"

log = logging.getLogger("mailgw.antivirus")

# Module level: registered once per process even when several runtimes are built (tests).
SCANS = Counter("mailgw_antivirus_scans_total", "Messages scanned by clamd, by outcome", ["outcome"])
SCAN_SECONDS = Histogram("mailgw_antivirus_scan_seconds", "Time of one clamd INSTREAM scan",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def build(settings: AntivirusSettings, scanner: ClamdScanner | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    clamd = scanner or ClamdScanner(settings.clamd_host, settings.clamd_port, settings.clamd_timeout_s)

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        result = await clamd.scan_async(raw)
        elapsed = time.perf_counter() - started
        SCAN_SECONDS.observe(elapsed)
        verdict = verdict_for(envelope.message_id, result, elapsed * 1000)
        if result.viruses:
            SCANS.labels("virus").inc()
            log.info("virus found", extra={"message_id": envelope.message_id, "viruses": list(result.viruses)})
        elif result.failed:
            SCANS.labels("failed").inc()
            log.warning("clamd scan failed", extra={"message_id": envelope.message_id, "error": result.error})
        else:
            SCANS.labels("clean").inc()
        await bus.publish(broker, verdict.model_dump_json().encode(), topics.MAIL_VERDICTS,
                          envelope.message_id, settings.publish_timeout_s)

    @broker.subscriber(topics.MAIL_RECEIVED, **bus.consumer_options(SERVICE, settings))
    async def on_received(msg: KafkaMessage) -> None:
        await guard.run(msg, handle)

    async def clamd_ready() -> tuple[bool, str]:
        return await asyncio.to_thread(clamd.ping, settings.clamd_ping_timeout_s)

    runtime.checks["clamd"] = clamd_ready
    return runtime
