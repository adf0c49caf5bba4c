"""Wiring: every mail topic and its dead-letter topic -> ClickHouse; the reporting API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from faststream.kafka.annotations import KafkaMessage

from mailgw_libs import bus
from mailgw_libs.config.model import GatewayConfig
from mailgw_libs.failfast import make_redis
from mailgw_libs.service import ServiceRuntime, setup
from mailgw_libs.userlists import UserListStore

from . import api, ingest, linkpages
from .auth import Authenticator
from .configured import from_environment, plan_of
from .digest import SpamReporter
from .expiry import run_expiry
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


@dataclass(frozen=True)
class Reporting:
    """The service's runtime and the parts a test (or an operator's tool) may drive directly."""

    runtime: ServiceRuntime
    store: ReportStore
    ops: QuarantineOps
    reporter: SpamReporter


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
    plan = from_environment(settings, clock)
    store = store or ReportStore(settings.clickhouse_url, settings.database, lifetimes=plan.lifetimes,
                                 clock=clock)
    redis = make_redis(settings.redis_url, timeout_s=5.0)
    userlists = UserListStore(redis, settings.userlists_prefix)

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
    reporter = SpamReporter(store, publish, plan.signer, plan.options, clock)
    authenticator = Authenticator()

    async def apply_config(config: GatewayConfig) -> None:
        # Built whole, then put in force at once; a report run in progress keeps what it started with.
        new = plan_of(config, settings, clock)
        reporter.configure(new.signer, new.options)
        authenticator.use(Authenticator.accounts_of(config.admins))
        await store.use_lifetimes(new.lifetimes)
        log.info("quarantine settings in force", extra={"lifetimes": dict(new.lifetimes.per_kind),
                                                        "reports": new.signer is not None and new.options.enabled})

    runtime.on_config(apply_config)

    async def start_schedules() -> None:
        if not background:
            return

        async def expiry() -> None:
            await run_expiry(store, settings.expiry_interval_s)

        runtime.spawn(expiry(), "quarantine-expiry")
        # Runs while a signer is configured (the configuration may add or remove the secret live).
        runtime.spawn(reporter.run_forever(settings.report_check_s), "spam-report")
        if reporter.signer is None:
            log.warning("no link secret: spam reports are off and report links refused")

    runtime.on_start.append(open_store)
    runtime.on_start.append(start_schedules)
    runtime.on_stop.append(close_store)
    runtime.checks["clickhouse"] = store.ping
    runtime.routes.extend(authenticator.protect_routes(api.routes(store, publish, userlists, ops, reporter)))
    runtime.routes.extend(linkpages.routes(lambda: reporter.signer, ops))
    return Reporting(runtime, store, ops, reporter)
