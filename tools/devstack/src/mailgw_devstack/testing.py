"""Helpers for in-process service tests on real components."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

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
