"""Helpers for in-process service tests on real components."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from mailgw_libs import frames, topics
from mailgw_libs.config.follower import ConfigFollower
from mailgw_libs.config.model import GatewayConfig
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.events import Direction, MailReceived, new_message_id, utcnow
from mailgw_libs.service import ServiceRuntime


@contextlib.asynccontextmanager
async def running(runtime: ServiceRuntime, timeout: float = 30.0) -> AsyncIterator[ServiceRuntime]:
    """Run the service's lifespan in this event loop until it has started."""
    async with runtime.lifespan(runtime.app()):
        deadline = asyncio.get_running_loop().time() + timeout
        while not runtime.started:
            failed = [t for t in runtime._tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                raise RuntimeError(f"{runtime.name} failed to start") from failed[0].exception()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{runtime.name} did not start within {timeout}s")
            await asyncio.sleep(0.05)
        yield runtime


async def produce(bootstrap: str, topic: str, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=64 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def collect(bootstrap: str, topic: str, count: int, timeout: float = 30.0,
                  key: str | None = None) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `count` records of `topic` (optionally only those with `key`) from the beginning."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_bytes=64 * 1024 * 1024,
                                max_partition_fetch_bytes=64 * 1024 * 1024)
    await consumer.start()
    found: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend(r for r in records if key is None or (r.key or b"").decode() == key)
    finally:
        await consumer.stop()
    return found


class KafkaTestBus:
    """A producer and readers on one test broker (`fresh_kafka`): what the rest of the gateway would do."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=32 * 1024 * 1024)
        self.consumers: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()
        for consumer in self.consumers.values():
            await consumer.stop()

    async def send_mail(self, raw: bytes, partition: int | None = 0) -> str:
        """Publish a MailReceived frame (like ingress does); returns its message id."""
        message_id = new_message_id()
        header = MailReceived(message_id=message_id, received_at=utcnow(), client_ip="127.0.0.1",
                              mail_from="sender@example.org", rcpt_tos=["rcpt@example.com"],
                              direction=Direction.INBOUND, size=len(raw))
        await self.send(topics.MAIL_RECEIVED, frames.pack(header, raw), message_id, partition)
        return message_id

    async def send(self, topic: str, value: bytes, key: str, partition: int | None = 0) -> None:
        await self.producer.send_and_wait(topic, value, key=key.encode(), partition=partition)

    async def read(self, topic: str, key: str, timeout_s: float = 30.0) -> ConsumerRecord[bytes, bytes]:
        """The first record of `topic` with this key, reading from the start."""
        if topic not in self.consumers:
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            self.consumers[topic] = consumer
        consumer = self.consumers[topic]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.decode() == key:
                        return record
        raise AssertionError(f"no record with key {key} on {topic} within {timeout_s} s")


async def wait_started(runtime: ServiceRuntime, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not runtime.started:
        if time.monotonic() > deadline:
            raise AssertionError(f"{runtime.name} did not start within {timeout_s} s")
        await asyncio.sleep(0.05)


# --- live configuration ----------------------------------------------------------------------------------------

class _AppliedMarker:
    """The last callback of a follower: when it runs, every callback the service registered before it has run
    with that version (the follower calls them in order), so the version is in force."""

    def __init__(self, follower: ConfigFollower) -> None:
        self.follower = follower
        self.sequence = follower.versions.sequence
        self.changed = asyncio.Condition()

    async def __call__(self, config: GatewayConfig) -> None:
        async with self.changed:
            self.sequence = self.follower.versions.sequence
            self.changed.notify_all()


_markers: weakref.WeakKeyDictionary[ConfigFollower, _AppliedMarker] = weakref.WeakKeyDictionary()


def _follower_of(runtime: ServiceRuntime) -> ConfigFollower:
    follower = runtime.config_follower
    if follower is None:
        raise AssertionError(f"{runtime.name} does not follow the configuration")
    return follower


def _marker(follower: ConfigFollower) -> _AppliedMarker:
    marker = _markers.get(follower)
    if marker is None:
        marker = _markers[follower] = _AppliedMarker(follower)
        follower.on_change(marker)
    return marker


async def publish_config(runtime: ServiceRuntime, config: GatewayConfig, *, expected_version: int | None = None,
                         author: str = "test", comment: str = "test", timeout_s: float = 30.0) -> int:
    """Publish `config` as the next version of `mailgw.config` and return its number once the running service
    has applied it (every configuration callback of the service has run with it). `expected_version`: the
    version the test believes is current (ConfigConflict otherwise); None takes whatever the topic holds."""
    follower = _follower_of(runtime)
    _marker(follower)  # registered before publishing, so it cannot miss the version
    store = ConfigStore(runtime.settings)
    if expected_version is None:
        expected_version = (await store.read()).sequence
    accepted = await store.publish(config, expected_version, author, comment)
    await wait_config_applied(runtime, accepted.record.version, timeout_s)
    return accepted.record.version


async def wait_config_applied(runtime: ServiceRuntime, sequence: int, timeout_s: float = 30.0) -> None:
    """Until the running service has applied the version numbered `sequence` (or a later one)."""
    marker = _marker(_follower_of(runtime))

    async def applied() -> None:
        async with marker.changed:
            await marker.changed.wait_for(lambda: marker.sequence >= sequence)

    try:
        await asyncio.wait_for(applied(), timeout_s)  # a hang guard, not a timing assertion
    except TimeoutError:
        raise AssertionError(f"{runtime.name} did not apply configuration version {sequence} "
                             f"within {timeout_s} s (applied: {marker.sequence})") from None


async def wait_config_read(runtime: ServiceRuntime, sequence: int, timeout_s: float = 30.0) -> None:
    """Until the service's follower has read `sequence` records that look like versions, valid or not (for
    records that change nothing, such as an invalid version, which no callback sees)."""
    follower = _follower_of(runtime)
    deadline = time.monotonic() + timeout_s
    while follower.versions.sequence < sequence:
        if time.monotonic() > deadline:  # a hang guard, not a timing assertion
            raise AssertionError(f"{runtime.name} never read configuration record {sequence} "
                                 f"(read: {follower.versions.sequence})")
        await asyncio.sleep(0.01)
