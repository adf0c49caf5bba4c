"""The delivery service as a real process, stopped in the middle of a batch and started again: every
message arrives exactly once (counted by Message-ID at the sink)."""

from __future__ import annotations

from pathlib import Path

from .harness import CountingSink, DeliveryProcess, publish_actions, wait_for

COUNT = 300


async def test_restart_in_the_middle_of_a_batch_loses_nothing_and_sends_nothing_twice(
        fresh_kafka: str, redis_url: str, unique: str, tmp_path: Path) -> None:
    sink = CountingSink()
    sink.start()
    service = DeliveryProcess(fresh_kafka, redis_url, sink.port, f"test:{unique}", tmp_path / "delivery.log")
    try:
        service.start()
        await service.wait_ready()
        ids = await publish_actions(fresh_kafka, f"restart{unique}", COUNT)
        assert await wait_for(lambda: sum(sink.counts().values()) >= COUNT // 4, 120), "nothing delivered"
        service.stop()  # SIGTERM while the batch is being delivered
        midway = sum(sink.counts().values())
        assert midway < COUNT, "the batch was over before the stop: nothing tested"
        service.start()
        await service.wait_ready()
        assert await wait_for(lambda: set(ids) <= set(sink.counts()), 180), "messages lost"
        await wait_for(lambda: False, 3.0)  # anything sent twice arrives by now
    finally:
        service.stop()
        sink.stop()
    counts = sink.counts()
    assert {i: n for i, n in counts.items() if n != 1} == {}
    assert sorted(counts) == sorted(ids)
    print(f"\nrestart after {midway}/{COUNT}: {len(counts)} distinct, {sum(counts.values())} arrivals")
