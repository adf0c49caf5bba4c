"""Pytest fixtures for real components: Tansu (Kafka API), redis-server, clamd, NSD (DNS), slapd (LDAP).

Session-scoped: one of each per test run, on free ports, in a temporary state directory.
Tests that need isolation use unique topic names / Redis key prefixes / group ids.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from mailgw_libs.service import ServiceRuntime

from .dnsserver import LocalDns
from .infra import Managed, start_clamd, start_redis, start_tansu
from .ldapserver import LocalLdap
from .testing import KafkaTestBus, wait_started


@pytest.fixture(scope="session")
def infra_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short path: unix sockets and tools dislike long ones.
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def kafka(infra_state: Path) -> Iterator[Managed]:
    broker = start_tansu(infra_state / "kafka")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: Managed) -> str:
    return f"127.0.0.1:{kafka.port}"


@pytest.fixture(scope="session")
def redis_server(infra_state: Path) -> Iterator[Managed]:
    server = start_redis(infra_state)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Managed) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture(scope="session")
def clamd(infra_state: Path) -> Iterator[Managed]:
    server = start_clamd(infra_state)
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic names, group ids and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own (Tansu starts in ~0.05 s): bootstrap address, empty topics."""
    broker = start_tansu(tmp_path / "kafka")
    yield f"127.0.0.1:{broker.port}"
    broker.stop()


@pytest.fixture
async def kafka_bus(fresh_kafka: str) -> AsyncIterator[KafkaTestBus]:
    """Producer and readers on this test's own broker: what the rest of the gateway would do."""
    test_bus = KafkaTestBus(fresh_kafka)
    await test_bus.start()
    yield test_bus
    await test_bus.stop()


@pytest.fixture(scope="session")
def started() -> Callable[[ServiceRuntime], Awaitable[None]]:
    """`await started(runtime)`: wait until an in-process service has connected and started."""
    return wait_started


@pytest.fixture(scope="session")
def dns_server(infra_state: Path) -> Iterator[LocalDns]:
    """NSD on a loopback port. Give each test its own zone names (use `unique`), then `set_zone(...)` and
    `apply()` (restarts NSD with all zones, ~0.1 s). Point resolvers at `dns_server.host` / `dns_server.port`."""
    server = LocalDns(infra_state)
    server.set_zone("devstack.test", ["@ IN A 127.0.0.1"])
    server.apply()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ldap_server(infra_state: Path) -> Iterator[LocalLdap]:
    """slapd with `dc=example,dc=test`, `ou=people`, `ou=groups`; add entries with `ldap_server.add(ldif)`."""
    server = LocalLdap(infra_state)
    server.start()
    yield server
    server.stop()
