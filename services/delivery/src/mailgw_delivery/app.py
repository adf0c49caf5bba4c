"""Wiring: mail.actions and mail.retry.<delay>s -> relay / quarantine / block -> mail.delivery (+ mail.quarantine)."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.config.model import GatewayConfig
from mailgw_libs.events import MailAction, RetryEnvelope, utcnow
from mailgw_libs.resolver import make_resolver
from mailgw_libs.service import ServiceRuntime, setup

from .configured import from_environment, plan_of
from .dedupe import DeliveryLedger
from .dsn import DsnBuilder
from .fates import FateApplier
from .relay import SmtpRelay
from .retry import PartitionHold, RetrySchedule, hold_for
from .routing import Dispatcher, Endpoint, MxResolver
from .settings import DeliverySettings

SERVICE = "delivery"

log = logging.getLogger("mailgw.delivery")


def build(settings: DeliverySettings) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    schedule = RetrySchedule.of(settings.retry_delays_s, settings.queue_lifetime_s)
    runtime = ServiceRuntime(SERVICE, settings, broker,
                             topic_specs=topics.all_topics(schedule.distinct_delays))

    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
    ledger = DeliveryLedger(client, settings.ledger_prefix, settings.ledger_ttl_s)
    plan = from_environment(settings)

    def relay_for(endpoint: Endpoint) -> SmtpRelay:
        return SmtpRelay(endpoint.host, endpoint.port, settings.helo_name, settings.connect_timeout_s,
                         settings.command_timeout_s, reuse_s=settings.relay_reuse_s,
                         reuse_messages=settings.relay_reuse_messages, tls=endpoint.tls, ca_file=endpoint.ca_file,
                         tls_name=endpoint.tls_name, protocol=endpoint.protocol)

    resolver = MxResolver(make_resolver(settings.dns_nameservers, settings.dns_port, settings.dns_timeout))
    relay = Dispatcher(plan.router, resolver, relay_for, settings.mx_port, settings.mx_max_hosts)

    async def publish(body: bytes, topic: str, key: str) -> None:
        await bus.publish(broker, body, topic, key, settings.publish_timeout_s)

    dsn = DsnBuilder(settings.dsn_reporting_mta or settings.helo_name, delay_warning_h=settings.delay_warning_s / 3600,
                     lifetime_h=settings.queue_lifetime_s / 3600) if settings.dsn_enabled else None
    applier = FateApplier(relay, ledger, schedule, publish, dsn=dsn, delay_warning_s=settings.delay_warning_s,
                          postmaster=plan.postmaster, helo_name=settings.helo_name)

    async def apply_config(config: GatewayConfig) -> None:
        # Built whole, then put in force at once; a delivery in progress keeps the router it started with.
        new = plan_of(config, settings)
        relay.use(new.router)
        applier.postmaster = new.postmaster
        log.info("routing in force", extra={"default": new.router.default.name,
                                            "transports": len(new.router.transports),
                                            "smarthost": new.router.smarthost is not None})

    runtime.on_config(apply_config)

    async def handle_action(msg: KafkaMessage) -> None:
        action, raw = await asyncio.to_thread(frames.unpack, bytes(msg.body), MailAction, settings.kafka_max_bytes)
        await applier.apply(action, raw)

    hold = PartitionHold()

    async def handle_retry(msg: KafkaMessage) -> None:
        data = bytes(msg.body)
        head = frames.unpack_header(data, RetryEnvelope)  # no decompression while it is not due
        wait_s = hold_for(head.not_before, utcnow(), settings.retry_hold_max_s)
        if wait_s > 0:
            await hold.hold(msg, wait_s)
            return
        envelope, raw = await asyncio.to_thread(frames.unpack, data, RetryEnvelope, settings.kafka_max_bytes)
        await applier.apply(envelope.action, raw, envelope.recipients, envelope.attempt, envelope.first_attempt_at,
                            envelope.warned)

    retry_topics = set(schedule.topics)

    # One consumer (group mailgw-delivery) for the actions and every retry topic: a retry
    # partition waiting for its head is paused, so it never holds up the others.
    @broker.subscriber(topics.MAIL_ACTIONS, *schedule.topics, **bus.consumer_options(SERVICE, settings))
    async def on_record(msg: KafkaMessage) -> None:
        topic = getattr(msg.raw_message, "topic", topics.MAIL_ACTIONS)
        await guard.run(msg, handle_retry if topic in retry_topics else handle_action)

    async def close_redis() -> None:
        await client.aclose()

    async def cancel_holds() -> None:
        hold.cancel()

    runtime.checks["redis"] = ledger.ping
    # Stop hooks run last to first: finish the sends in progress, then close sessions and Redis.
    runtime.on_stop += [cancel_holds, relay.close, close_redis, applier.drain]
    return runtime
