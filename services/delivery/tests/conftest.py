"""Fixtures of the delivery tests (the real Kafka and Redis come from mailgw_devstack.pytest_plugin)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest

from mailgw_devstack.infra import free_port

from .support import Sink, SinkHandler

SinkFactory = Callable[..., Sink]


@pytest.fixture
def sinks() -> Iterator[SinkFactory]:
    """Starts SMTP sinks on free ports (or a given one); all stopped after the test."""
    started: list[Sink] = []

    def start(handler: SinkHandler | None = None, port: int | None = None, tls_context: ssl.SSLContext | None = None,
              host: str = "127.0.0.1") -> Sink:
        sink = Sink(handler or SinkHandler(), port or free_port(), tls_context, host).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()
