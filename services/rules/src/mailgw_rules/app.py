"""Wiring: mail.received + mail.verdicts -> VerdictJoin (Redis) -> rule system -> mail.actions.

The rule system comes from `ruleset_file` when set (a fixed file, for a local run), else from the
gateway configuration (`mailgw.config`, shipped PMG defaults while it holds no version), applied live
together with the LDAP profiles the rules name, the notification templates and the admin address.

`scoring.scorers`, `scoring.deadline_s` and `scoring.failure_policy`: the configuration's values once a
version is published (a version writes every field out); the environment's (`MAILGW_RULES_SCORERS`,
`..._DEADLINE_S`, `..._ON_MISSING`) only while `mailgw.config` holds none.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus, frames, topics
from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.events import MailAction, MailReceived, Verdict
from mailgw_libs.service import ServiceRuntime, setup
from mailgw_libs.userlists import UserListStore

from .decider import Decider
from .directories import DirectoryManager
from .engine import Clock, FailurePolicy, RuleEngine, utc_clock
from .join import VerdictJoin
from .matching import Directory, DirectoryLookupFailed
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

    directories = DirectoryManager(redis, settings.directory_prefix, settings.directory_cache_ttl_s)

    async def apply_config(config: GatewayConfig) -> None:
        # Everything is prepared first, then swapped in without an await in between: a decision in flight
        # finishes with the old engine, the next one sees all of the new configuration.
        used = {name: config.ldap_profiles[name] for name in sorted(config.rules.ldap_profiles_used())}
        lookups = directory if directory is not None else await directories.apply(used)
        engine = RuleEngine(config.rules, lookups, userlists, clock, admin_address=config.notifications.admin_address,
                            templates=config.notifications.templates)
        scoring = config.scoring
        scorers: list[str] = list(scoring.scorers) if is_set(scoring, "scorers") else list(settings.scorers)
        deadline_s = scoring.deadline_s if is_set(scoring, "deadline_s") else settings.deadline_s
        policy = failure_policy_of(config) if is_set(scoring, "failure_policy") else dict(settings.on_missing)
        decider.engine, decider.failure_policy = engine, policy
        # Messages already waiting keep the deadline they got; completeness is judged by the new scorer list.
        join.scorers, join.deadline_s = scorers, deadline_s
        log.info("rule system applied", extra={"rules": len(engine.rules), "scorers": scorers,
                                               "deadline_s": deadline_s, "ldap_profiles": sorted(used)})

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
                    try:
                        await decider.decide(message_id)
                    except DirectoryLookupFailed as exc:
                        # This message waits for its directory; the others due behind it are decided meanwhile.
                        log.warning("directory unavailable, decision postponed",
                                    extra={"message_id": message_id, "error": str(exc)})
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
    runtime.on_stop.append(directories.stop)
    runtime.on_stop.append(close_redis)
    runtime.checks["redis"] = redis_ready
    return runtime
