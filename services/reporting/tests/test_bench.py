"""Ingest rate and query latency on chdb: `pytest -m slow services/reporting/tests/test_bench.py -s`.

Prints the figures quoted in the README. Runs on the session's chdb directory like the other tests,
with a time window and sender domain of its own. Skipped unless slow tests are asked for (`-m slow`),
so that a plain `pytest services/reporting` stays quick.
"""

from __future__ import annotations

import time
from datetime import timedelta
from statistics import median
from typing import TYPE_CHECKING

import pytest

from mailgw_libs.events import DeliveryStatus, Fate, SymbolHit, new_message_id
from mailgw_reporting import ingest
from mailgw_reporting.queries import QuarantineQuery, TrackingQuery, Window
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("benchmark: run with -m slow")

PER_MESSAGE = 300  # messages stored one insert per event, as the service does
BULK = 50_000  # messages stored in batches, to give the queries some volume


def build_events(s: Scenario, count: int, start: float) -> None:
    hits = [SymbolHit(name="MISSING_DATE", score=1.0), SymbolHit(name="PHRASE_FREE_MONEY", score=1.5)]
    for i in range(count):
        t = start + i * 0.01
        bob, carol = s.rcpt(f"bob{i % 50}"), s.rcpt("carol")
        rx = s.received([bob, carol], t=t, message_id=new_message_id())
        s.verdict(rx.message_id, "antispam", hits)
        s.verdict(rx.message_id, "antivirus", [])
        spam = i % 10 == 0
        s.action(rx, {bob: Fate.QUARANTINE if spam else Fate.ACCEPT, carol: Fate.ACCEPT}, spam=spam, score=2.5,
                 symbols=hits, t=t + 1)
        if spam:
            s.quarantine(rx, [bob], s.raw("spam", "x" * 2000), t=t + 2)
        else:
            s.delivery(rx.message_id, bob, DeliveryStatus.DELIVERED, t=t + 2)
        s.delivery(rx.message_id, carol, DeliveryStatus.DEFERRED if i % 7 == 0 else DeliveryStatus.DELIVERED, t=t + 2)


async def timed(label: str, fn: object, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    print(f"{label}: median {median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f}, {runs} runs)")
    return median(times)


async def test_ingest_and_query_figures(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    await store.open()

    build_events(s, PER_MESSAGE, start=0)
    rows = sum(len(ingest.rows_for(ingest.RecordMeta(topic=t), d, 1 << 20).rows) for t, d in s.events)
    started = time.perf_counter()
    await s.store_all(store)
    elapsed = time.perf_counter() - started
    print(f"\nper-event inserts: {len(s.events)} events ({rows} rows) of {PER_MESSAGE} messages in {elapsed:.1f} s: "
          f"{len(s.events) / elapsed:.0f} inserts/s, {rows / elapsed:.0f} rows/s, "
          f"{PER_MESSAGE / elapsed:.0f} messages/s")

    # Bulk: the same events, grouped per table in batches of 5000 rows (what batching would give).
    s.events.clear()
    build_events(s, BULK, start=600)
    batches: dict[str, ingest.Batch] = {}
    for topic, data in s.events:
        b = ingest.rows_for(ingest.RecordMeta(topic=topic), data, 1 << 20)
        batches.setdefault(b.table.name, ingest.Batch(b.table)).rows.extend(b.rows)
    total = sum(len(b.rows) for b in batches.values())
    started = time.perf_counter()
    for b in batches.values():
        for i in range(0, len(b.rows), 5000):
            await store.insert(ingest.Batch(b.table, b.rows[i:i + 5000]))
    elapsed = time.perf_counter() - started
    print(f"batched inserts (5000 rows): {total} rows of {BULK} messages in {elapsed:.1f} s: {total / elapsed:.0f} rows/s")

    window = Window(s.base, s.base + timedelta(hours=2))
    summary = await store.summary(window)
    assert summary["received"] == PER_MESSAGE + BULK
    print(f"summary of the window: {summary}")
    await timed("summary, window of the test", lambda: store.summary(window))
    await timed("summary, all time", lambda: store.summary(Window()))
    await timed("tracking, sender, limit 100", lambda: store.tracking(TrackingQuery(sender=s.sender)))
    await timed("tracking, sender, limit 1000", lambda: store.tracking(TrackingQuery(sender=s.sender, limit=1000)))
    await timed("tracking, recipient", lambda: store.tracking(TrackingQuery(recipient=s.rcpt("bob7"))))
    await timed("tracking, domain + window", lambda: store.tracking(
        TrackingQuery(sender="@" + s.sender.split("@")[1], window=Window(s.at(700), s.at(800)))))
    await timed("quarantine list", lambda: store.quarantine_list(QuarantineQuery(sender=s.sender)))
    some = (await store.quarantine_list(QuarantineQuery(sender=s.sender, limit=1)))[0]["id"]
    await timed("quarantine raw", lambda: store.quarantine_raw(some))
    await timed("ping (SELECT 1)", store.ping)


async def test_service_ingest_rate(fresh_kafka: str, chdb_url: str, scenario: Scenario) -> None:
    """Events through Kafka into ClickHouse: the rate of the running service (batched inserts)."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from mailgw_devstack.testing import running
    from mailgw_reporting.app import build
    from mailgw_reporting.settings import ReportingSettings

    s = scenario
    count = 200
    build_events(s, count, start=0)
    runtime = build(ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0))
    store = ReportStore(chdb_url)
    async with running(runtime):
        producer = AIOKafkaProducer(bootstrap_servers=fresh_kafka, linger_ms=5)
        await producer.start()
        try:
            started = time.perf_counter()
            for topic, data in s.events:
                await producer.send(topic, data, key=b"k")
            await producer.flush()
            published = time.perf_counter() - started
            while (await store.summary(s.window))["recipients"]["delivered"] + (
                    await store.summary(s.window))["recipients"]["deferred"] < 2 * count - count // 10:
                await asyncio.sleep(0.5)
                assert time.perf_counter() - started < 300
            elapsed = time.perf_counter() - started
        finally:
            await producer.stop()
    await store.close()
    print(f"\nservice: {len(s.events)} events of {count} messages published in {published:.1f} s, all stored after "
          f"{elapsed:.1f} s: {len(s.events) / elapsed:.0f} events/s, {count / elapsed:.1f} messages/s")
