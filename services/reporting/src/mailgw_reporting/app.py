"""Wiring: every mail topic and its dead-letter topic -> ClickHouse; the reporting API over HTTP."""

from __future__ import annotations

import contextlib
import logging

from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus
from mailgw_libs.service import ServiceRuntime, setup

from . import api, ingest
from .settings import ReportingSettings
from .store import ReportStore

SERVICE = "reporting"

log = logging.getLogger("mailgw.reporting")


def record_meta(msg: KafkaMessage) -> ingest.RecordMeta:
    """Topic, place, key, timestamp and headers of the Kafka record behind `msg`."""
    record = msg.raw_message
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


def build(settings: ReportingSettings, store: ReportStore | None = None) -> ServiceRuntime:
    provider = setup(SERVICE, settings)
    broker = bus.make_broker(settings, SERVICE, provider)
    guard = bus.DeadLetterGuard(broker, SERVICE, settings.publish_timeout_s)
    runtime = ServiceRuntime(SERVICE, settings, broker)
    store = store or ReportStore(settings.clickhouse_url, settings.database, settings.quarantine_days)

    async def handle(msg: KafkaMessage) -> None:
        batch = ingest.rows_for(record_meta(msg), bytes(msg.body), settings.max_message_bytes)
        await store.insert(batch)

    # One consumer for all the topics: the inserts are serialised by the store anyway, and one group
    # member means one rebalance at start instead of one per topic.
    @broker.subscriber(*ingest.ALL_TOPICS, **bus.consumer_options(SERVICE, settings))
    async def on_record(msg: KafkaMessage) -> None:
        await guard.run(msg, handle)

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

    runtime.on_start.append(open_store)
    runtime.on_stop.append(close_store)
    runtime.checks["clickhouse"] = store.ping
    runtime.routes.extend(api.routes(store))
    return runtime
