"""Wiring: mail.received + mail.verdicts -> VerdictJoin (Redis) -> policy -> mail.actions."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import MailAction, MailReceived, Verdict
from mailgw_libs.service import ServiceRuntime, setup

from .decider import Decider
from .join import VerdictJoin
from .policy import DefaultPolicy, PolicyConfig
from .settings import RulesSettings

SERVICE = "rules"
log = logging.getLogger("mailgw.rules")


def build(settings: RulesSettings, redis_prefix: str | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    join = VerdictJoin(redis, settings.scorers, settings.deadline_s, settings.state_ttl_s,
                       **({"prefix": redis_prefix} if redis_prefix else {}))
    policy = DefaultPolicy(PolicyConfig(settings.spam_tag_score, settings.spam_quarantine_score,
                                        settings.subject_tag, dict(settings.on_missing)))

    async def publish_action(action: MailAction, raw: bytes) -> None:
        await bus.publish(broker, frames.pack(action, raw), topics.MAIL_ACTIONS, action.message_id,
                          settings.publish_timeout_s)

    decider = Decider(join, policy, publish_action, settings.kafka_max_bytes)

    async def handle_received(msg: KafkaMessage) -> None:
        data = bytes(msg.body)
        envelope = frames.unpack_header(data, MailReceived)
        if await join.is_done(envelope.message_id):
            return
        await join.add_received(envelope.message_id, data, envelope.received_at.timestamp(),
                                msg.headers.get("traceparent", ""))
        await decider.decide_if_complete(envelope.message_id)

    async def handle_verdict(msg: KafkaMessage) -> None:
        verdict = Verdict.model_validate_json(bytes(msg.body))
        if await join.is_done(verdict.message_id):
            return
        await join.add_verdict(verdict)
        await decider.decide_if_complete(verdict.message_id)

    handlers = {topics.MAIL_RECEIVED: handle_received, topics.MAIL_VERDICTS: handle_verdict}

    # One consumer for both topics: one group member per process (Tansu's group coordinator
    # stalls when one process joins the same group twice for different topics).
    @broker.subscriber(*handlers, **bus.consumer_options(SERVICE, settings))
    async def on_message(msg: KafkaMessage) -> None:
        await guard.run(msg, handlers[getattr(msg.raw_message, "topic", "")])

    async def sweep_deadlines() -> None:
        """Decides messages whose deadline passed with the verdicts they have (a scorer is late or dead)."""
        while True:
            try:
                for message_id in await join.due(time.time()):
                    await decider.decide(message_id)
            except Exception as exc:  # noqa: BLE001 - Redis or Kafka down: try again next round
                log.warning("deadline sweep failed", extra={"error": repr(exc)})
            await asyncio.sleep(settings.sweep_interval_s)

    async def start_sweeper() -> None:
        runtime.spawn(sweep_deadlines(), "deadline-sweeper")

    async def redis_ready() -> tuple[bool, str]:
        return bool(await redis.ping()), f"pending={await join.pending()}"

    async def close_redis() -> None:
        await redis.aclose()

    runtime.on_start.append(start_sweeper)
    runtime.on_stop.append(close_redis)
    runtime.checks["redis"] = redis_ready
    return runtime
