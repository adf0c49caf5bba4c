"""Deliveries per second with one delivery process to a local SMTP sink.

Starts Tansu and Redis on free ports, an aiosmtpd sink (a thread of this process) and `python -m
mailgw_delivery` as a process of its own; warms up with a few messages, then publishes N actions
(one recipient each, ~2.5 KB messages) to mail.actions at once and times until the sink has them all.

    .venv/bin/python bench/delivery_throughput.py [N] [recipients per message]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mailgw_devstack.infra import start_redis, start_tansu, stop_all
from services.delivery.tests.harness import CountingSink, DeliveryProcess, publish_actions, wait_for


async def run(state: Path, count: int, recipients: int) -> None:
    kafka, redis = start_tansu(state / "kafka"), start_redis(state / "redis")
    sink = CountingSink()
    sink.start()
    service = DeliveryProcess(f"127.0.0.1:{kafka.port}", f"redis://127.0.0.1:{redis.port}/0", sink.port, "bench",
                              state / "delivery.log")
    try:
        service.start()
        await service.wait_ready()
        warm = await publish_actions(service.env["MAILGW_KAFKA_BOOTSTRAP"], "warm", 20)
        assert await wait_for(lambda: set(warm) <= set(sink.counts()), 120), "warm-up not delivered"
        started = time.perf_counter()
        ids = await publish_actions(service.env["MAILGW_KAFKA_BOOTSTRAP"], "bench", count, recipients)
        published = time.perf_counter() - started
        done = await wait_for(lambda: set(ids) <= set(sink.counts()), 900)
        elapsed = time.perf_counter() - started
    finally:
        service.stop()
        sink.stop()
        stop_all([kafka, redis])
    counts = sink.counts()
    arrived = sum(counts[i] for i in ids)
    print(f"messages: {count} x {recipients} recipient(s); published in {published:.2f} s")
    print(f"delivered: {len([i for i in ids if counts[i]])}/{count} (all: {done}), arrivals {arrived}, "
          f"duplicates {sum(counts[i] - 1 for i in ids if counts[i] > 1)}")
    print(f"one delivery process: {elapsed:.2f} s, {count / elapsed:.0f} messages/s, "
          f"{count * recipients / elapsed:.0f} recipient deliveries/s")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    recipients = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-") as state:
        asyncio.run(run(Path(state), count, recipients))


if __name__ == "__main__":
    main()
