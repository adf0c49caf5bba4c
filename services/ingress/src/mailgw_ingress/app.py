"""Wiring: SMTP server -> mail.received (and refusals -> smtp.events); the SMTP policy follows mailgw.config."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgw_libs import bus, frames, topics
from mailgw_libs.config.model import GatewayConfig, shipped_defaults
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.failfast import make_redis
from mailgw_libs.resolver import make_resolver
from mailgw_libs.service import ServiceRuntime, setup

from .beforequeue import ActionWaiter
from .configured import PolicyBuilder
from .relay import RelayPolicy
from .settings import IngressSettings
from .smtp import IngressHandler, make_tls_context, start_smtp_server

SERVICE = "ingress"
log = logging.getLogger("mailgw.ingress")


class SmtpEventPublisher:
    """Publishes SMTP-time events in the background: statistics must never slow the dialogue."""

    def __init__(self, runtime: ServiceRuntime, timeout_s: float, capacity: int = 10_000) -> None:
        self.runtime = runtime
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[SmtpEvent] = asyncio.Queue(maxsize=capacity)

    def submit(self, event: SmtpEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("smtp event dropped: queue full", extra={"reason": event.reason})

    async def run(self) -> None:
        assert self.runtime.broker is not None
        while True:
            _stop_if_cancelled()
            event = await self.queue.get()
            while True:
                try:
                    await bus.publish(self.runtime.broker, event.model_dump_json().encode(), topics.SMTP_EVENTS,
                                      event.client_ip, self.timeout_s)
                    break
                except Exception as exc:  # noqa: BLE001 - keep the event and retry while the bus is down
                    _stop_if_cancelled()
                    log.warning("smtp event not published yet", extra={"error": repr(exc)})
                    await asyncio.sleep(1.0)


def _stop_if_cancelled() -> None:
    """Raise when this task was cancelled (shutdown) but the cancellation got lost on the way: on Python 3.11 a
    `wait_for` inside the producer may swallow it, or turn it into an error, and the loop must still end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def build(settings: IngressSettings) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    events = SmtpEventPublisher(runtime, settings.publish_timeout_s)

    async def publish_received(event: MailReceived, raw: bytes) -> None:
        if not runtime.broker_ready:
            raise ConnectionError("not connected to kafka")
        data = frames.pack(event, raw)
        await bus.publish(broker, data, topics.MAIL_RECEIVED, event.message_id, settings.publish_timeout_s)

    # Created whatever the environment says: a configuration version may turn greylisting, rate limits, DNS
    # checks or directories on at any time. Neither connects before it is used.
    redis = make_redis(settings.redis_url, settings.redis_timeout_s)
    resolver = make_resolver(settings.dns_nameservers, settings.dns_port, settings.dns_timeout)
    builder = PolicyBuilder(settings, redis, resolver)
    actions = ActionWaiter(settings.kafka_bootstrap, settings.kafka_fetch_max_wait_ms)
    actions_running = False
    policy_built = False
    # Until the first policy is built (before the listener starts) nothing is answered; this one is replaced.
    handler = IngressHandler(RelayPolicy(settings.relay_domains, settings.trusted_networks), publish_received,
                             events.submit, settings.hostname, settings.max_recipients, settings.max_message_bytes)
    handler.actions = actions  # used when the policy in force says before-queue
    server: asyncio.AbstractServer | None = None

    async def put_in_force(config: GatewayConfig, why: str) -> None:
        nonlocal actions_running, policy_built
        policy = await builder.build(config)  # prepared whole before anything changes
        if policy.before_queue and not actions_running:
            # The reader of mail.actions starts the first time a policy asks for before-queue answers and then
            # keeps reading (cheap): turning the mode off and on again needs no new consumer.
            actions_running = True
            runtime.spawn(actions.run(), "before-queue-actions")
        handler.replace(policy)
        policy_built = True
        log.info("smtp policy in force", extra={
            "source": why, "relay_domains": sorted(policy.relay.relay_domains),
            "greylisting": policy.greylist is not None, "dnsbl": policy.dnsbl is not None,
            "recipient_verification": policy.recipients is not None, "before_queue": policy.before_queue})

    async def apply_config(config: GatewayConfig) -> None:
        await put_in_force(config, "configuration")

    async def start_smtp() -> None:
        nonlocal server
        # The environment's policy (the shipped defaults give no field) answers from the first connection; the
        # configuration replaces it as soon as mailgw.config has been read.
        await put_in_force(shipped_defaults(), "environment")
        tls_context = None
        if settings.tls_cert_file and settings.tls_key_file:
            tls_context = await asyncio.to_thread(make_tls_context, settings.tls_cert_file, settings.tls_key_file)
        server = await start_smtp_server(handler, settings.smtp_host, settings.smtp_port, settings.max_message_bytes,
                                         settings.max_line_bytes, settings.session_timeout_s,
                                         data_timeout_s=settings.data_timeout_s, max_errors=settings.max_errors,
                                         pregreet_delay_s=settings.pregreet_delay_s, tls_context=tls_context)
        runtime.spawn(events.run(), "smtp-events")
        log.info("smtp listening", extra={"host": settings.smtp_host, "port": settings.smtp_port,
                                          "starttls": tls_context is not None})

    async def stop_smtp() -> None:
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(builder.directories.stop(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(actions.stop(), 5)
        with contextlib.suppress(Exception):
            await redis.aclose()

    async def smtp_listening() -> tuple[bool, str]:
        return (server is not None and server.is_serving(), f"{settings.smtp_host}:{settings.smtp_port}")

    async def before_queue_state() -> tuple[bool, str]:
        # Not ready yet only means messages are accepted after-queue until it is: ingress stays ready.
        if not handler.current.before_queue:
            return True, "off"
        return True, "reading mail.actions" if actions.ready.is_set() else "degraded: mail.actions not read yet"

    async def redis_state() -> tuple[bool, str]:
        # Greylisting and rate limits fail open: Redis down degrades policy but mail still flows,
        # so ingress stays ready and the detail says what is degraded.
        uses_redis = handler.current.uses_redis if policy_built else settings.uses_redis
        if not uses_redis:
            return True, "not used by the policy in force"
        try:
            await redis.ping()
            return True, "redis ok"
        except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
            return True, f"degraded: redis unreachable ({exc!r}); greylisting and rate limits fail open"

    runtime.on_boot.append(start_smtp)
    runtime.on_stop.append(stop_smtp)
    runtime.on_config(apply_config)
    runtime.checks["smtp"] = smtp_listening
    runtime.checks["before_queue"] = before_queue_state
    runtime.checks["redis"] = redis_state
    return runtime
