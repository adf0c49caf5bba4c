"""Wiring: mail.received -> clamd INSTREAM scan (layer 1) + attachment policy and YARA (layer 2) -> mail.verdicts.

Follows `mailgw.config` for `scoring.symbol_scores` and `scoring.virus_symbols`: the configuration's values
once a version is published, the environment's (`MAILGW_ANTIVIRUS_SYMBOL_SCORES`, `..._VIRUS_SYMBOLS`) while
it holds none. A change builds a new attachment policy (YARA rules stay compiled) and a verdict cache keyed by
its fingerprint, swapped in at once: a message is scanned and cached with one of them throughout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from mailgw_libs import bus, frames, topics
from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.events import MailReceived, Verdict
from mailgw_libs.failfast import make_redis
from mailgw_libs.service import ServiceRuntime, setup

from .archives import Limits
from .attachments import AttachmentPolicy, Layer2Result, PolicyConfig
from .cache import VerdictCache
from .scanner import SCORER, ClamdScanner, ScanResult, verdict_for
from .settings import AntivirusSettings
from .yara_rules import YaraRules

SERVICE = "antivirus"

log = logging.getLogger("mailgw.antivirus")

# Module level: registered once per process even when several runtimes are built (tests).
SCANS = Counter("mailgw_antivirus_scans_total", "Messages scanned by clamd, by outcome", ["outcome"])
SCAN_SECONDS = Histogram("mailgw_antivirus_scan_seconds", "Time of the clamd scans of one message (whole + parts)",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAYER2_SECONDS = Histogram("mailgw_antivirus_layer2_seconds", "Time of one attachment-policy/YARA scan",
                           buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAYER2_SYMBOLS = Counter("mailgw_antivirus_layer2_symbols_total", "Layer-2 findings, by symbol", ["symbol"])
CACHE = Counter("mailgw_antivirus_cache_total", "Verdict cache lookups, by result", ["result"])


def compile_yara(settings: AntivirusSettings) -> YaraRules | None:
    rules = YaraRules(settings.yara_dirs) if settings.yara_dirs else None
    if rules is not None:
        log.info("YARA rules compiled", extra={"files": list(rules.files.values()), "rules": rules.count})
    return rules


def make_policy(settings: AntivirusSettings, scores: Mapping[str, float] | None = None,
                virus_symbols: Sequence[str] | None = None, rules: YaraRules | None = None) -> AttachmentPolicy:
    """The layer-2 policy; `scores` and `virus_symbols` default to the environment's, `rules` (compiled YARA) are
    compiled from `settings.yara_dirs` when not given."""
    if rules is None:
        rules = compile_yara(settings)
    config = PolicyConfig(
        limits=Limits(max_total_bytes=settings.archive_max_total_bytes, max_members=settings.archive_max_members,
                      max_ratio=settings.archive_max_ratio, ratio_min_bytes=settings.archive_ratio_min_bytes),
        max_depth=settings.archive_max_depth, timeout_s=settings.layer2_timeout_s,
        pdf_max_stream_bytes=settings.pdf_max_stream_bytes,
        scores=dict(settings.symbol_scores if scores is None else scores),
        virus_symbols=frozenset(settings.virus_symbols if virus_symbols is None else virus_symbols),
        yara_default_score=settings.yara_default_score,
    )
    return AttachmentPolicy(config, rules)


@dataclass(frozen=True)
class Layer2Setup:
    """What one configuration makes of layer 2: the policy and the verdict cache keyed by its fingerprint."""

    policy: AttachmentPolicy | None
    cache: VerdictCache | None


def build(settings: AntivirusSettings, scanner: ClamdScanner | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    clamd = scanner or ClamdScanner(settings.clamd_host, settings.clamd_port, settings.clamd_timeout_s,
                                    unix_socket=settings.clamd_socket, max_connections=settings.clamd_max_connections,
                                    max_parts=settings.clamd_max_parts)
    runtime.on_stop.append(clamd.close)
    yara = compile_yara(settings) if settings.layer2_enabled else None  # rules compile once, here
    redis = make_redis(settings.redis_url, settings.redis_timeout_s) if settings.cache_enabled else None
    if redis is not None:
        runtime.on_stop.append(redis.aclose)

    def prepare(scores: Mapping[str, float] | None = None, virus_symbols: Sequence[str] | None = None) -> Layer2Setup:
        policy = make_policy(settings, scores, virus_symbols, yara) if settings.layer2_enabled else None
        cache = None
        if redis is not None:
            cache = VerdictCache(redis, settings.cache_prefix, settings.cache_ttl_s,
                                 policy.fingerprint() if policy is not None else "clamd-only")
        return Layer2Setup(policy, cache)

    current = prepare()

    async def apply_config(config: GatewayConfig) -> None:
        nonlocal current
        scoring = config.scoring
        candidate = prepare(scoring.symbol_scores if is_set(scoring, "symbol_scores") else None,
                            scoring.virus_symbols if is_set(scoring, "virus_symbols") else None)
        if candidate.policy is None or current.policy is None \
                or candidate.policy.fingerprint() == current.policy.fingerprint():
            return  # nothing that changes a verdict changed (or layer 2 is off): keep the cache's breaker state too
        current = candidate
        log.info("scoring configuration applied", extra={"fingerprint": candidate.policy.fingerprint()})

    runtime.on_config(apply_config)

    async def layer2(policy: AttachmentPolicy | None, raw: bytes) -> Layer2Result | None:
        if policy is None:
            return None
        started = time.perf_counter()
        result = await policy.scan_async(raw)
        LAYER2_SECONDS.observe(time.perf_counter() - started)
        for hit in result.hits:
            LAYER2_SYMBOLS.labels(hit.name).inc()
        return result

    async def clamd_scan(raw: bytes) -> ScanResult:
        started = time.perf_counter()
        result = await clamd.scan_message(raw)
        SCAN_SECONDS.observe(time.perf_counter() - started)
        return result

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        setup = current  # one configuration for the whole message, even if a new one arrives meanwhile
        policy, cache = setup.policy, setup.cache
        key = cache.key(raw) if cache is not None else ""
        cached = await cache.get(key) if cache is not None else None
        if cached is not None:
            CACHE.labels("hit").inc()
            verdict = Verdict.of(envelope.message_id, SCORER, cached.symbols,
                                 (time.perf_counter() - started) * 1000, viruses=cached.viruses)
            verdict = verdict.model_copy(update={"attachments": cached.attachments})
        else:
            if cache is not None:
                CACHE.labels("miss").inc()
            result, extra = await asyncio.gather(clamd_scan(raw), layer2(policy, raw))
            verdict = verdict_for(envelope.message_id, result, (time.perf_counter() - started) * 1000, extra)
            if result.failed:
                log.warning("clamd scan failed", extra={"message_id": envelope.message_id, "error": result.error})
            if extra is not None and extra.error:
                log.warning("attachment scan incomplete", extra={"message_id": envelope.message_id,
                                                                 "error": extra.error})
            if cache is not None and not result.failed and (extra is None or extra.complete):
                await cache.put(key, verdict.symbols, verdict.viruses, verdict.attachments)
        if verdict.viruses:
            SCANS.labels("virus").inc()
            log.info("virus found", extra={"message_id": envelope.message_id, "viruses": verdict.viruses})
        elif verdict.failed:
            SCANS.labels("failed").inc()
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
