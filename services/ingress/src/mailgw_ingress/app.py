"""Wiring: SMTP server -> mail.received (and refusals -> smtp.events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from mailgw_libs import bus, frames, topics
from mailgw_libs.directory import Directory, DirectoryProfile
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.failfast import Breaker, make_redis
from mailgw_libs.resolver import make_resolver
from mailgw_libs.service import ServiceRuntime, setup

from .access import AccessList
from .beforequeue import ActionWaiter
from .dnsbl import ConnectionDnsbl
from .greylist import GreylistPolicy
from .hostchecks import HostChecks
from .ratelimit import RateLimiter
from .recipients import CalloutRecipients, DirectoryRecipients, RecipientSource, RecipientVerifier, StaticRecipients
from .relay import RelayPolicy
from .settings import IngressSettings
from .smtp import IngressHandler, make_tls_context, start_smtp_server
from .spfcheck import SpfChecker

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

    redis: aioredis.Redis | None = None
    if settings.uses_redis:
        redis = make_redis(settings.redis_url, settings.redis_timeout_s)
    breaker = Breaker()  # one Redis: one failure opens it for both checks
    greylist = None
    if settings.greylisting and redis is not None:
        greylist = GreylistPolicy(redis, settings.redis_prefix, settings.greylist_delay_s,
                                  settings.greylist_retry_window_s, settings.greylist_whitelist_s, breaker=breaker)
    rates = None
    if redis is not None and (settings.messages_per_minute_per_ip > 0 or settings.messages_per_minute_per_sender > 0):
        rates = RateLimiter(redis, settings.redis_prefix, breaker=breaker)
    resolver = make_resolver(settings.dns_nameservers, settings.dns_port, settings.dns_timeout) \
        if settings.uses_dns else None
    dnsbl = None
    if settings.dnsbl_lists and resolver is not None:
        lists = [DnsList(d.zone, d.weight, "ip", frozenset(d.answers) or None) for d in settings.dnsbl_lists]
        checker = DnsListChecker(resolver, redis, settings.dnsbl_cache_ttl_s, settings.dnsbl_timeout_s,
                                 prefix=settings.redis_prefix + "dnsl:", breaker=breaker)
        dnsbl = ConnectionDnsbl(checker, lists, settings.dnsbl_threshold, settings.dnsbl_on_dns_failure)
    hostchecks = None
    if resolver is not None:
        hostchecks = HostChecks(resolver, own_names=[settings.hostname], own_ips=[settings.smtp_host],
                                helo_checks=settings.helo_checks, helo_require_fqdn=settings.helo_require_fqdn,
                                reject_unknown_sender_domain=settings.reject_unknown_sender_domain,
                                rdns=settings.client_rdns_check)
    spf = SpfChecker(settings.dns_nameservers, settings.dns_port, settings.dns_timeout, settings.hostname) \
        if settings.spf else None
    directories = [Directory(DirectoryProfile(
        name=d.name, uri=d.uri, base_dn=d.base_dn, bind_dn=d.bind_dn, password=d.password, user_filter=d.user_filter,
        mail_attributes=tuple(d.mail_attributes), group_base_dn=d.group_base_dn, group_filter=d.group_filter,
        member_attribute=d.member_attribute, timeout_s=d.timeout_s), redis, prefix=settings.redis_prefix + "dir:",
        cache_ttl_s=settings.ldap_cache_ttl_s) for d in settings.ldap_directories if redis is not None]
    sources: list[RecipientSource] = []
    if settings.valid_recipients:
        sources.append(StaticRecipients(settings.valid_recipients))
    if directories:
        sources.append(DirectoryRecipients(directories, settings.ldap_domains))
    if settings.recipient_callout:
        sources.append(CalloutRecipients(
            settings.callout_hosts, settings.callout_default_host, settings.hostname, redis,
            prefix=settings.redis_prefix, positive_ttl_s=settings.callout_positive_ttl_s,
            negative_ttl_s=settings.callout_negative_ttl_s, timeout_s=settings.callout_timeout_s))
    actions = ActionWaiter(settings.kafka_bootstrap, settings.kafka_fetch_max_wait_ms) \
        if settings.before_queue else None
    handler = IngressHandler(
        policy=RelayPolicy(settings.relay_domains, settings.trusted_networks),
        publish=publish_received,
        on_event=events.submit,
        hostname=settings.hostname,
        max_recipients=settings.max_recipients,
        max_message_bytes=settings.max_message_bytes,
        welcomelist=AccessList.parse(settings.welcomelist),
        blocklist=AccessList.parse(settings.blocklist),
        greylist=greylist,
        rates=rates,
        max_connections_per_ip=settings.max_connections_per_ip,
        messages_per_minute_per_ip=settings.messages_per_minute_per_ip,
        messages_per_minute_per_sender=settings.messages_per_minute_per_sender,
        tls_required_sender_domains=settings.tls_required_sender_domains,
        dnsbl=dnsbl, hostchecks=hostchecks, spf=spf, spf_reject_fail=settings.spf_reject_fail,
        greylist_spf_pass_bypass=settings.greylist_spf_pass_bypass,
        recipients=RecipientVerifier(sources) if sources else None,
        actions=actions, before_queue_deadline_s=settings.before_queue_deadline_s,
        reject_pipelined_greeting=settings.reject_pipelined_greeting,
    )
    server: asyncio.AbstractServer | None = None

    async def start_smtp() -> None:
        nonlocal server
        tls_context = None
        if settings.tls_cert_file and settings.tls_key_file:
            tls_context = await asyncio.to_thread(make_tls_context, settings.tls_cert_file, settings.tls_key_file)
        server = await start_smtp_server(handler, settings.smtp_host, settings.smtp_port, settings.max_message_bytes,
                                         settings.max_line_bytes, settings.session_timeout_s,
                                         data_timeout_s=settings.data_timeout_s, max_errors=settings.max_errors,
                                         pregreet_delay_s=settings.pregreet_delay_s, tls_context=tls_context)
        runtime.spawn(events.run(), "smtp-events")
        for directory in directories:
            runtime.spawn(directory.run_sync_loop(settings.ldap_sync_interval_s), f"ldap-sync-{directory.profile.name}")
        if actions is not None:
            runtime.spawn(actions.run(), "before-queue-actions")
        log.info("smtp listening", extra={"host": settings.smtp_host, "port": settings.smtp_port,
                                          "starttls": tls_context is not None, "greylisting": greylist is not None})

    async def stop_smtp() -> None:
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        if actions is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actions.stop(), 5)
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def smtp_listening() -> tuple[bool, str]:
        return (server is not None and server.is_serving(), f"{settings.smtp_host}:{settings.smtp_port}")

    runtime.on_boot.append(start_smtp)
    runtime.on_stop.append(stop_smtp)
    runtime.checks["smtp"] = smtp_listening
    if actions is not None:
        waiter = actions

        async def before_queue_state() -> tuple[bool, str]:
            # Not ready yet only means messages are accepted after-queue until it is: ingress stays ready.
            return True, "reading mail.actions" if waiter.ready.is_set() else "degraded: mail.actions not read yet"

        runtime.checks["before_queue"] = before_queue_state
    if redis is not None:
        store = redis

        async def redis_state() -> tuple[bool, str]:
            # Greylisting and rate limits fail open: Redis down degrades policy but mail still flows,
            # so ingress stays ready and the detail says what is degraded.
            try:
                await store.ping()
                return True, "redis ok"
            except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
                return True, f"degraded: redis unreachable ({exc!r}); greylisting and rate limits fail open"

        runtime.checks["redis"] = redis_state
    return runtime
