"""Wiring: SMTP server -> mail.received (and refusals -> smtp.events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.service import ServiceRuntime, setup

from .relay import RelayPolicy
from .settings import IngressSettings
from .smtp import IngressHandler, start_smtp_server

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
            event = await self.queue.get()
            while True:
                try:
                    await bus.publish(self.runtime.broker, event.model_dump_json().encode(), topics.SMTP_EVENTS,
                                      event.client_ip, self.timeout_s)
                    break
                except Exception as exc:  # noqa: BLE001 - keep the event and retry while the bus is down
                    log.warning("smtp event not published yet", extra={"error": repr(exc)})
                    await asyncio.sleep(1.0)


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

    handler = IngressHandler(
        policy=RelayPolicy(settings.relay_domains, settings.trusted_networks),
        publish=publish_received,
        on_event=events.submit,
        hostname=settings.hostname,
        max_recipients=settings.max_recipients,
        max_message_bytes=settings.max_message_bytes,
    )
    server: asyncio.AbstractServer | None = None

    async def start_smtp() -> None:
        nonlocal server
        server = await start_smtp_server(handler, settings.smtp_host, settings.smtp_port, settings.max_message_bytes,
                                         settings.max_line_bytes, settings.session_timeout_s)
        runtime.spawn(events.run(), "smtp-events")
        log.info("smtp listening", extra={"host": settings.smtp_host, "port": settings.smtp_port})

    async def stop_smtp() -> None:
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def smtp_listening() -> tuple[bool, str]:
        return (server is not None and server.is_serving(), f"{settings.smtp_host}:{settings.smtp_port}")

    runtime.on_boot.append(start_smtp)
    runtime.on_stop.append(stop_smtp)
    runtime.checks["smtp"] = smtp_listening
    return runtime
