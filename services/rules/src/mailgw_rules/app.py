"""Wiring: mail.received + mail.verdicts -> VerdictJoin (Redis) -> rule system -> mail.actions.

The rule system comes from `ruleset_file` when set (a fixed file, for a local run), else from the
gateway configuration (`mailgw.config`, shipped PMG defaults while it holds no version), applied live.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.config.model import GatewayConfig
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.events import MailAction, MailReceived, Verdict
from mailgw_libs.service import ServiceRuntime, setup
from mailgw_libs.userlists import UserListStore

from .decider import Decider
from .engine import Clock, FailurePolicy, RuleEngine, utc_clock
from .join import VerdictJoin
from .matching import Directory
from .settings import RulesSettings

SERVICE = "rules"
log = logging.getLogger("mailgw.rules")


def failure_policy_of(config: GatewayConfig) -> dict[str, FailurePolicy]:
    """The configuration's per-scorer policy; "accept" (fail open) decides without the verdict, like "ignore"."""
    return {scorer: ("ignore" if policy == "accept" else policy) for scorer, policy in config.scoring.failure_policy.items()}


def build(settings: RulesSettings, redis_prefix: str | None = None, directory: Directory | None = None,
          clock: Clock = utc_clock) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    join = VerdictJoin(redis, settings.scorers, settings.deadline_s, settings.state_ttl_s,
                       **({"prefix": redis_prefix} if redis_prefix else {}))
    userlists = UserListStore(redis, prefix=settings.userlists_prefix)
    rules = RuleSystemConfig.from_file(settings.ruleset_file) if settings.ruleset_file else RuleSystemConfig.defaults()

    async def publish_action(action: MailAction, raw: bytes) -> None:
        await bus.publish(broker, frames.pack(action, raw), topics.MAIL_ACTIONS, action.message_id,
                          settings.publish_timeout_s)

    decider = Decider(join, RuleEngine(rules, directory, userlists, clock), dict(settings.on_missing), publish_action,
                      settings.kafka_max_bytes)

    async def apply_config(config: GatewayConfig) -> None:
        # A new engine (rules compiled) replaces the old one at once; decisions in flight finish with the old.
        decider.engine = RuleEngine(config.rules, directory, userlists, clock,
                                    admin_address=config.notifications.admin_address)
        decider.failure_policy = failure_policy_of(config)
        log.info("rule system applied", extra={"rules": len(decider.engine.rules)})

    if not settings.ruleset_file:
        runtime.on_config(apply_config)

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
