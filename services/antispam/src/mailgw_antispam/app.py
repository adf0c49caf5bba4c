"""Wiring: mail.received -> scan (rules + Bayes) -> mail.verdicts, then autolearn; mail.learn -> Bayes."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.bayes import TokenizerConfig
from mailgw_libs.bayes import symbol as bayes_symbol
from mailgw_libs.config.model import GatewayConfig
from mailgw_libs.events import HeaderChange, LearnRequest, MailReceived, Verdict
from mailgw_libs.failfast import Breaker, make_redis
from mailgw_libs.service import ServiceRuntime, setup

from .bayes import analyse, analyse_for_learning, autolearn_label, rule_kinds
from .configured import make_setup
from .online import Envelope, OnlineChecks
from .rules import load_engine
from .settings import AntispamSettings

SERVICE = "antispam"
log = logging.getLogger(__name__)


def build(settings: AntispamSettings) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    engine = load_engine(tuple(settings.rule_dirs), settings.default_rules, settings.hyperscan,
                         tuple(settings.ok_languages), settings.hyperscan_cache_dir)
    report = engine.ruleset
    log.info("antispam rules: %d loaded, %d unsupported, %d malformed lines, hyperscan %s (from disk cache %s)",
             len(report.rules), len(engine.unsupported), len(report.problems), engine.accelerated,
             engine.from_cache)
    for problem in report.problems[:50]:
        log.warning("rule file: %s", problem)
    tokenizer = TokenizerConfig()
    analyse_one = functools.partial(analyse, max_chars=settings.max_scan_chars, engine=engine, tokenizer=tokenizer)
    # The Bayes store connection outlives configuration versions (Bayes may be switched on live); it
    # connects on first use only.
    bayes_client = make_redis(settings.redis_url, settings.bayes_redis_timeout_s)
    runtime.on_stop.append(bayes_client.aclose)
    bayes_breaker = Breaker()
    current = make_setup(settings, None, bayes_client, bayes_breaker)

    async def apply_config(config: GatewayConfig) -> None:
        nonlocal current
        current = make_setup(settings, config, bayes_client, bayes_breaker)
        log.info("antispam configuration applied: threshold %s, %d symbol scores, bayes %s",
                 current.spam_threshold, len(current.symbol_scores), "on" if current.bayes else "off")

    runtime.on_config(apply_config)
    kinds, no_autolearn = rule_kinds(engine)
    dns_cache = make_redis(settings.redis_url, settings.dnsl_timeout_s) if settings.network_checks else None
    if dns_cache is not None:
        runtime.on_stop.append(dns_cache.aclose)
    online = OnlineChecks.from_settings(settings, dns_cache)

    async def handle(msg: KafkaMessage) -> None:
        envelope, raw = frames.unpack(bytes(msg.body), MailReceived, settings.kafka_max_bytes)
        started = time.perf_counter()
        in_force = current  # one configuration for the whole message, even if a new one arrives meanwhile
        bayes = in_force.bayes
        # DNS checks (authentication, DNS lists) wait on the network while the rules use the CPU
        online_task = asyncio.ensure_future(online.run(raw, Envelope(
            envelope.message_id, envelope.client_ip, envelope.spf, envelope.spf_domain))) if online else None
        analysis = await asyncio.get_running_loop().run_in_executor(None, analyse_one, raw)
        rule_hits = in_force.rescore(analysis.hits)
        hits = list(rule_hits)
        add_headers: list[HeaderChange] = []
        if online_task is not None:
            online_hits, add_headers = await online_task
            hits += online_hits
        outcome = await bayes.classify(analysis.tokens, envelope.rcpt_tos) if bayes is not None else None
        if outcome is not None:
            hits.append(bayes_symbol(outcome))
        hits = in_force.rescore(hits)
        verdict = Verdict.of(envelope.message_id, SERVICE, hits, (time.perf_counter() - started) * 1000)
        if add_headers:
            verdict = verdict.model_copy(update={"add_headers": add_headers})
        await bus.publish(broker, verdict.model_dump_json().encode(), topics.MAIL_VERDICTS,
                          envelope.message_id, settings.publish_timeout_s)
        if bayes is not None:
            label = autolearn_label(rule_hits, kinds, in_force.autolearn, no_autolearn,
                                    outcome.probability if outcome is not None else None)
            if label is not None:
                await bayes.autolearn(analysis.tokens, analysis.key, label, envelope.rcpt_tos)

    async def handle_learn(msg: KafkaMessage) -> None:
        request, raw = frames.unpack(bytes(msg.body), LearnRequest, settings.kafka_max_bytes)
        bayes = current.bayes
        if bayes is None:
            log.warning("mail.learn %s ignored: Bayes is off", request.message_id)
            return
        tokens, key = await asyncio.get_running_loop().run_in_executor(None, analyse_for_learning, raw, tokenizer, engine,
                                                                        settings.max_scan_chars)
        outcome = await bayes.learn(tokens, key, request.label, request.recipient, request.forget)
        log.info("bayes %s %s as %s (%s): %s", "forget" if request.forget else "learn", request.message_id,
                 request.label, request.source, outcome)

    handlers = {topics.MAIL_RECEIVED: handle, topics.MAIL_LEARN: handle_learn}

    # One consumer for all topics (one group member per process; see docs/development.md).
    @broker.subscriber(*handlers, **bus.consumer_options(SERVICE, settings))
    async def on_message(msg: KafkaMessage) -> None:
        await guard.run(msg, handlers[getattr(msg.raw_message, "topic", topics.MAIL_RECEIVED)])

    return runtime
