from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, start_smtp_server
from mailgw_libs.events import MailReceived, SmtpEvent


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@dataclass
class Gateway:
    """A running SMTP server of the test with a recording bus: what it queued and which refusals it published."""

    port: int
    handler: IngressHandler
    queued: list[tuple[MailReceived, bytes]] = field(default_factory=list)
    events: list[SmtpEvent] = field(default_factory=list)

    async def publish(self, event: MailReceived, raw: bytes) -> None:
        self.queued.append((event, raw))

    def checks(self) -> list[str]:
        return [e.check for e in self.events]


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway() -> AsyncIterator[MakeGateway]:
    """`await gateway(**handler_kwargs)`: relay domain example.com, trusted 127.0.0.1, on a free port."""
    servers: list[asyncio.AbstractServer] = []

    async def make(*, max_line_bytes: int = 10_000, session_timeout_s: float = 30, max_errors: int = 20,
                   max_message_bytes: int = 64 * 1024, relay_domains: tuple[str, ...] = ("example.com",),
                   publish: Callable[[MailReceived, bytes], Awaitable[None]] | None = None,
                   **handler_kwargs: Any) -> Gateway:
        gw = Gateway(free_port(), None)  # type: ignore[arg-type]
        gw.handler = IngressHandler(RelayPolicy(list(relay_domains), ["127.0.0.1/32"]), publish or gw.publish,
                                    gw.events.append, "mx.test", max_recipients=100,
                                    max_message_bytes=max_message_bytes, **handler_kwargs)
        servers.append(await start_smtp_server(gw.handler, "127.0.0.1", gw.port, max_message_bytes, max_line_bytes,
                                               session_timeout_s, max_errors=max_errors))
        return gw

    yield make
    for srv in servers:
        srv.close()
