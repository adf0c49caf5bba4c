"""Wiring: every mail topic and its dead-letter topic -> ClickHouse; the reporting API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus
from mailgw_libs.events import Direction
from mailgw_libs.failfast import make_redis
from mailgw_libs.service import ServiceRuntime, setup
from mailgw_libs.userlists import UserListStore

from . import api, ingest, linkpages
from .digest import ReportOptions, SpamReporter
from .expiry import run_expiry
from .links import LinkSigner
from .operations import QuarantineOps
from .settings import ReportingSettings
from .store import Clock, ReportStore, system_clock

SERVICE = "reporting"

log = logging.getLogger("mailgw.reporting")


def record_meta(record: Any) -> ingest.RecordMeta:
    """Topic, place, key, timestamp and headers of one Kafka record."""
    key = getattr(record, "key", None)
    headers = {
        name: value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        for name, value in (getattr(record, "headers", None) or ())
    }
    return ingest.RecordMeta(
        topic=str(getattr(record, "topic", "")),
        partition=int(getattr(record, "partition", -1)),
        offset=int(getattr(record, "offset", -1)),
        key=key.decode(errors="replace") if isinstance(key, bytes) else "",
        timestamp_ms=getattr(record, "timestamp", None),
        headers=headers,
    )


def link_signer(settings: ReportingSettings, clock: Clock) -> LinkSigner | None:
    secret = settings.report_secret.get_secret_value()
    if not secret:
        return None
    return LinkSigner(secret, timedelta(hours=settings.report_link_ttl_h), clock)


def report_options(settings: ReportingSettings) -> ReportOptions:
    return ReportOptions(interval=timedelta(hours=settings.report_interval_h), base_url=settings.report_base_url,
                         sender=settings.report_from, kinds=tuple(settings.report_kinds),
                         max_items=settings.report_max_items, direction=Direction(settings.report_direction))


@dataclass(frozen=True)
class Reporting:
    """The service's runtime and the parts a test (or an operator's tool) may drive directly."""

    runtime: ServiceRuntime
    store: ReportStore
    ops: QuarantineOps
    reporter: SpamReporter | None


def build(settings: ReportingSettings, store: ReportStore | None = None) -> ServiceRuntime:
    return assemble(settings, store).runtime


def assemble(settings: ReportingSettings, store: ReportStore | None = None, clock: Clock = system_clock,
             background: bool = True) -> Reporting:
    """The service; `clock` is the time of the quarantine (expiry, reports, links), `background=False`
    leaves the expiry and report schedules to the caller (tests run them with their clock)."""
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    store = store or ReportStore(settings.clickhouse_url, settings.database, lifetimes=settings.lifetimes,
                                 clock=clock)
    redis = make_redis(settings.redis_url, timeout_s=5.0)
    userlists = UserListStore(redis, settings.userlists_prefix)
    signer = link_signer(settings, clock)

    async def handle_batch(msg: KafkaMessage) -> None:
        """Rows of every record of the batch, one insert per table.

        ClickHouse (and chdb far more so) wants few large inserts: one insert per event capped
        ingestion at ~10 messages/s. A record that cannot be mapped is dead-lettered on its own;
        a store failure raises and the whole batch is redelivered (inserts are idempotent).
        """
        records: tuple[Any, ...] = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        per_table: dict[str, ingest.Batch] = {}
        for record in records:
            value = bytes(record.value or b"")
            try:
                batch = ingest.rows_for(record_meta(record), value, settings.max_message_bytes)
            except Exception as exc:  # bad record: dead-letter it alone, keep the rest of the batch
                if guard.is_transient(exc):
                    raise
                await guard.dead_letter_record(record, value, exc)
                continue
            per_table.setdefault(batch.table.name, ingest.Batch(batch.table)).rows.extend(batch.rows)
        for batch in per_table.values():
            await store.insert(batch)

    # One consumer for all the topics: the inserts are serialised by the store anyway, and one group
    # member means one rebalance at start instead of one per topic.
    @broker.subscriber(*ingest.ALL_TOPICS, batch=True, max_records=settings.batch_max_records,
                       batch_timeout_ms=settings.batch_timeout_ms, **bus.consumer_options(SERVICE, settings))
    async def on_batch(msg: KafkaMessage) -> None:
        try:
            await handle_batch(msg)
        except Exception as exc:
            if guard.is_transient(exc):
                log.warning("store or bus unavailable, batch will be redelivered", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            raise

    async def open_store() -> None:
        try:
            await store.open()
        except Exception as exc:  # noqa: BLE001 - retried by the first insert or query; /readyz says why
            log.error("cannot open the report store yet", extra={"url": store.where, "error": repr(exc)})

    async def close_store() -> None:
        # Stop consuming first, so that no handler runs against a closed store.
        with contextlib.suppress(Exception):
            await broker.stop()
        await store.close()
        await redis.aclose()

    async def publish(body: bytes, topic: str, key: str) -> None:
        await bus.publish(broker, body, topic, key, settings.publish_timeout_s)

    ops = QuarantineOps(store, publish, userlists, clock)
    reporter = SpamReporter(store, publish, signer, report_options(settings), clock) if signer else None

    async def start_schedules() -> None:
        if not background:
            return

        async def expiry() -> None:
            await run_expiry(store, settings.expiry_interval_s)

        runtime.spawn(expiry(), "quarantine-expiry")
        if reporter is not None:
            runtime.spawn(reporter.run_forever(settings.report_check_s), "spam-report")
        else:
            log.warning("no MAILGW_REPORTING_REPORT_SECRET: spam reports are off and report links refused")

    runtime.on_start.append(open_store)
    runtime.on_start.append(start_schedules)
    runtime.on_stop.append(close_store)
    runtime.checks["clickhouse"] = store.ping
    runtime.routes.extend(api.routes(store, publish, userlists, ops, reporter))
    runtime.routes.extend(linkpages.routes(signer, ops))
    return Reporting(runtime, store, ops, reporter)
