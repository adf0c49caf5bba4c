"""Wiring: mail.received -> scan -> mail.verdicts."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import MailReceived, Verdict
from mailgw_libs.service import ServiceRuntime, setup

from .rules import load_engine
from .scanner import scan
from .settings import AntispamSettings

SERVICE = "antispam"
log = logging.getLogger(__name__)


def build(settings: AntispamSettings) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    engine = load_engine(tuple(settings.rule_dirs), settings.default_rules, settings.hyperscan)
    report = engine.ruleset
    log.info("antispam rules: %d loaded, %d unsupported, %d malformed lines, hyperscan %s",
             len(report.rules), len(engine.unsupported), len(report.problems), engine.accelerated)
    for problem in report.problems[:50]:
        log.warning("rule file: %s", problem)
    scan_one = functools.partial(scan, max_chars=settings.max_scan_chars, engine=engine)

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        hits = await asyncio.get_running_loop().run_in_executor(None, scan_one, raw)
        verdict = Verdict.of(envelope.message_id, SERVICE, hits, (time.perf_counter() - started) * 1000)
        await bus.publish(broker, verdict.model_dump_json().encode(), topics.MAIL_VERDICTS,
                          envelope.message_id, settings.publish_timeout_s)

    @broker.subscriber(topics.MAIL_RECEIVED, **bus.consumer_options(SERVICE, settings))
    async def on_received(msg: KafkaMessage) -> None:
        await guard.run(msg, handle)

    return runtime
