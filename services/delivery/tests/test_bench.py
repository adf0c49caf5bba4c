"""Throughput of one delivery process to a local SMTP sink (slow: run with -m slow)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from mailgw_devstack.infra import Managed, free_port, spawn, wait_port
from mailgw_libs import frames, topics
from mailgw_libs.events import DeliveryResult, DeliveryStatus

from .conftest import SinkFactory
from .support import RAW, TopicReader, action, decision, running, settings_for, wait_until

BODY = RAW + (b"x" * 76 + b"\r\n") * 128  # about 10 KB


@pytest.fixture(autouse=True)
def only_when_selected(request: pytest.FixtureRequest) -> None:
    """A benchmark runs only when asked for (`-m slow`), not with every `pytest services/delivery`."""
    markexpr = str(request.config.getoption("markexpr") or "")
    if "slow" not in markexpr or "not slow" in markexpr:
        pytest.skip("benchmark: run with -m slow")


@pytest.fixture
def sink_process(tmp_path: Path) -> Iterator[int]:
    """An aiosmtpd sink in a process of its own (it does not share this process's CPU and GIL)."""
    port = free_port()
    proc = spawn("sink", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                          "-c", "aiosmtpd.handlers.Sink"], tmp_path / "sink.log")
    wait_port(port, 15, proc, "SMTP sink")
    yield port
    Managed("sink", port, tmp_path / "sink.log", proc=proc).stop()


@pytest.mark.slow
@pytest.mark.parametrize(("recipients", "separate_sink"), [(1, True), (3, True), (1, False)])
async def test_deliveries_per_second(fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory,
                                     sink_process: int, recipients: int, separate_sink: bool) -> None:
    count = 1000
    sink = sinks() if not separate_sink else None
    acts = [action(*(decision(f"user{i}-{r}@example.com", subject_tag="[T]" if r else "") for r in range(recipients)))
            for i in range(count)]
    port = sink_process if sink is None else sink.port
    async with running(settings_for(fresh_kafka, redis_url, port, unique)):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        producer = AIOKafkaProducer(bootstrap_servers=fresh_kafka, linger_ms=5, max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            started = time.perf_counter()
            futures = [await producer.send(topics.MAIL_ACTIONS, frames.pack(a, BODY), key=a.message_id.encode())
                       for a in acts]
            await asyncio.gather(*futures)
            await wait_until(lambda: len(reader.on(topics.MAIL_DELIVERY)) >= count * recipients, within_s=600,
                             what="all results")
            elapsed = time.perf_counter() - started
        finally:
            await producer.stop()
            await reader.stop()
    statuses = {DeliveryResult.model_validate_json(r.value or b"").status for r in reader.on(topics.MAIL_DELIVERY)}
    assert statuses == {DeliveryStatus.DELIVERED}
    transactions = count * min(recipients, 2)  # with a tag for all but the first recipient: 2 copies
    where = "sink in its own process" if sink is None else "sink in this process"
    print(f"\n{count} actions x {recipients} recipient(s), {len(BODY)} bytes, {where}: {elapsed:.2f}s, "
          f"{count / elapsed:.0f} actions/s, {count * recipients / elapsed:.0f} recipient deliveries/s, "
          f"{transactions / elapsed:.0f} SMTP transactions/s")
    if sink is not None:
        assert len(sink.handler.received) == transactions
