"""`ReportStore`: the ClickHouse client, the schema, inserts and the read queries.

The client is clickhouse-connect, on an embedded chdb engine (`chdb://<dir>`) or on a server
(`http(s)://...`): the same code drives both. Its calls are synchronous, so they run on one worker
thread of the store's own, under one lock (chdb is one embedded engine per process, and a handle
must not be used by two threads at once). The connection and the schema are made on first use and
again after a connection failure, so a server that is down at start is picked up later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from clickhouse_connect.driver.exceptions import OperationalError
from prometheus_client import Counter, Histogram

from mailgw_libs.bus import TransientError

from . import queries
from .ingest import Batch
from .schema import QUARANTINE_OPS, QUARANTINE_REPORTS, Lifetimes, Table, all_tables

log = logging.getLogger("mailgw.reporting.store")

T = TypeVar("T")

# The time of the store's queries (expiry, the digest's windows); tests inject their own.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)

ROWS = Counter("mailgw_reporting_rows_total", "Rows inserted into the reporting tables", ["table"])
CALL_SECONDS = Histogram(
    "mailgw_reporting_clickhouse_seconds", "ClickHouse calls of the reporting store (lock wait included)", ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

# ClickHouse error codes that a later retry can fix: the server is busy, short of resources or
# unreachable, or the schema vanished (it is created again on the next call).
TRANSIENT_CODES = frozenset({
    60,   # UNKNOWN_TABLE
    81,   # UNKNOWN_DATABASE
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    243,  # NOT_ENOUGH_SPACE
    252,  # TOO_MANY_PARTS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
})
SCHEMA_CODES = frozenset({60, 81})


IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class StoreUnavailable(TransientError):
    """ClickHouse cannot be reached or is overloaded: retry later (the Kafka message is redelivered)."""


def client_dsn(url: str) -> str:
    """The DSN for clickhouse_connect.get_client (see `parse_url`)."""
    return parse_url(url)[0]


def parse_url(url: str) -> tuple[str, str | None]:
    """The DSN for clickhouse_connect.get_client, and the database named in the URL if any.

    `chdb://<dir>` names a directory, relative (to the working directory) or absolute
    (`chdb:///var/lib/x`); it is made absolute, and created, because clickhouse-connect would read
    `chdb://var/clickhouse` as directory `var` and database `clickhouse`. `chdb://memory` is a
    throwaway in-memory engine. For http(s) URLs, a path (`http://host:8123/mailgw`) names the
    database; it is taken out of the DSN, because the client checks the database when it connects,
    before the store has created it.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"ClickHouse URL without a scheme: {url!r} (use chdb://<dir> or http(s)://host:port)")
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        database = parts.path.strip("/") or None
        if database is not None and not IDENTIFIER.match(database):
            raise ValueError(f"the database in the ClickHouse URL must be a plain identifier, got {database!r}")
        return urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")), database
    if scheme != "chdb":
        raise ValueError(f"unsupported ClickHouse URL scheme {scheme!r} (use chdb://<dir> or http(s)://host:port)")
    location, qmark, query = rest.partition("?")
    if location in ("memory", ":memory:"):
        return "chdb://memory" + qmark + query, None
    if not location:
        raise ValueError("chdb:// URL without a directory")
    path = os.path.abspath(location)
    os.makedirs(path, exist_ok=True)
    return "chdb://" + path + qmark + query, None


def redact(url: str) -> str:
    """The URL without its password, for logs and readiness details."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class ReportStore:
    """Owns the ClickHouse client and schema of the reporting service."""

    def __init__(self, url: str, database: str = "mailgw", quarantine_days: int = 7,
                 lifetimes: Lifetimes | None = None, clock: Clock = system_clock) -> None:
        self.url = url
        self.dsn, url_database = parse_url(url)
        self.database = url_database or database
        if not IDENTIFIER.match(self.database):
            raise ValueError(f"the database must be a plain identifier, got {self.database!r}")
        self.lifetimes = lifetimes or Lifetimes(quarantine_days)
        self.quarantine_days = self.lifetimes.default_days
        self.clock = clock
        self.tables: list[Table] = all_tables(self.lifetimes)
        self._client: Client | None = None
        self._schema_ready = False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reporting-clickhouse")
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return redact(self.url)

    def _connect(self) -> Client:
        if self._client is None:
            self._client = clickhouse_connect.get_client(dsn=self.dsn)
            log.info("connected to clickhouse", extra={"url": self.where})
        client = self._client
        if not self._schema_ready:
            self._create_schema(client)
            self._schema_ready = True
        return client

    def _create_schema(self, client: Client) -> None:
        """Database and tables, idempotently; columns added to the definitions since are added."""
        db = self.database
        client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        for table in self.tables:
            client.command(table.create_sql(db))
            existing = {
                row[0] for row in client.query(
                    "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                    parameters={"db": db, "t": table.name},
                ).result_rows
            }
            for name, kind in table.columns:
                if name not in existing:
                    client.command(f"ALTER TABLE {db}.{table.name} ADD COLUMN IF NOT EXISTS `{name}` {kind}")
            if table.ttl:
                engine = client.query(
                    "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                    parameters={"db": db, "t": table.name},
                ).result_rows[0][0]
                if table.ttl not in engine:
                    log.info("changing the table's lifetime", extra={"ttl": table.ttl, "table": table.name})
                    client.command(f"ALTER TABLE {db}.{table.name} MODIFY TTL {table.ttl}")

    def _drop_client(self) -> None:
        client, self._client, self._schema_ready = self._client, None, False
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _call(self, op: str, fn: Callable[[Client], T]) -> T:
        started = time.perf_counter()
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the report store is closed")
            try:
                client = self._connect()
            except Exception as exc:  # whatever stops the store from opening is not the message's fault
                self._drop_client()
                raise StoreUnavailable(f"cannot open clickhouse at {self.where}: {exc}") from exc
            try:
                return fn(client)
            except OperationalError as exc:
                # Connection level: drop the client, a new one is made on the next call.
                self._drop_client()
                raise StoreUnavailable(f"clickhouse unreachable: {exc}") from exc
            except ClickHouseError as exc:
                code = getattr(exc, "code", None)
                if code in SCHEMA_CODES:
                    self._schema_ready = False
                if code in TRANSIENT_CODES:
                    raise StoreUnavailable(f"clickhouse error {code}: {exc}") from exc
                raise
            finally:
                CALL_SECONDS.labels(op).observe(time.perf_counter() - started)

    async def run(self, op: str, fn: Callable[[Client], T]) -> T:
        """Run `fn(client)` on the store's thread, under its lock."""
        if self._closed:
            raise StoreUnavailable("the report store is closed")
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._call, op, fn)
        except RuntimeError as exc:  # the executor was shut down meanwhile
            raise StoreUnavailable("the report store is closed") from exc
        return await future

    async def use_lifetimes(self, lifetimes: Lifetimes) -> None:
        """Put new quarantine lifetimes in force (a configuration change): the queries and the expiry use them
        from now on (the expiry is computed from the row, so they apply to what is already in quarantine), and
        the table's TTL is changed now, or when the store is next reachable."""
        if lifetimes == self.lifetimes:
            return
        self.lifetimes = lifetimes
        self.quarantine_days = lifetimes.default_days
        self.tables = all_tables(lifetimes)
        self._schema_ready = False  # the schema step of the next call changes the TTL
        try:
            await self.run("lifetimes", lambda client: self._create_schema(client))
        except StoreUnavailable as exc:
            log.warning("quarantine TTL not changed yet: store unavailable", extra={"error": str(exc)})

    async def open(self) -> None:
        """Connect and create the schema now (otherwise done by the first call)."""
        await self.run("open", lambda _client: None)

    async def close(self) -> None:
        if self._closed:
            return

        def _close() -> None:
            with self._lock:
                self._closed = True
                if self._client is not None:
                    self._client.close()
                    self._client = None

        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=False)  # the close above ran last on its thread: nothing is left

    async def ping(self) -> tuple[bool, str]:
        """Readiness: `SELECT 1` through the store."""
        value = await self.run("ping", lambda c: c.query("SELECT 1").result_rows[0][0])
        return value == 1, self.where

    # -- writes --------------------------------------------------------------------------------

    def _insert(self, client: Client, batch: Batch) -> None:
        client.insert(
            f"{self.database}.{batch.table.name}", batch.rows,
            column_names=batch.table.column_names, column_type_names=batch.table.column_types,
        )

    async def insert(self, batch: Batch) -> None:
        if not batch.rows:
            return
        await self.run("insert", lambda c: self._insert(c, batch))
        ROWS.labels(batch.table.name).inc(len(batch.rows))

    # -- reads ---------------------------------------------------------------------------------

    async def summary(self, window: queries.Window) -> dict[str, Any]:
        return await self.run("summary", lambda c: queries.summary(c, self.database, window))

    async def tracking(self, query: queries.TrackingQuery) -> list[dict[str, Any]]:
        return await self.run("tracking", lambda c: queries.tracking(c, self.database, query))

    async def quarantine_list(self, query: queries.QuarantineQuery) -> list[dict[str, Any]]:
        now = self.clock()
        return await self.run(
            "quarantine_list", lambda c: queries.quarantine_list(c, self.database, self.lifetimes, now, query))

    async def quarantine_get(self, message_id: str, deleted: bool = False) -> dict[str, Any] | None:
        now = self.clock()
        return await self.run(
            "quarantine_get",
            lambda c: queries.quarantine_get(c, self.database, self.lifetimes, now, message_id, deleted))

    async def message_origin(self, message_id: str) -> tuple[str, str]:
        return await self.run("message_origin", lambda c: queries.message_origin(c, self.database, message_id))

    async def record_quarantine_op(self, message_id: str, op: str, op_id: str, at: datetime,
                                   recipients: list[str]) -> None:
        """Record a release or a deletion of a quarantined message (see `queries.quarantine_states`)."""
        await self.insert(Batch(QUARANTINE_OPS, [[message_id, op, op_id, at, list(recipients)]]))

    async def quarantine_raw(self, message_id: str) -> bytes | None:
        now = self.clock()
        return await self.run(
            "quarantine_raw", lambda c: queries.quarantine_raw(c, self.database, self.lifetimes, now, message_id))

    async def expire_quarantine(self) -> int:
        """Delete the quarantined messages past their kind's lifetime now; the number of rows deleted.

        The TTL drops them too, but only when parts merge, which may be long after; the queries hide
        them meanwhile. This deletes them (and their bytes) at the time of the store's clock.
        """
        now = self.clock()
        return await self.run("expire", lambda c: queries.expire_quarantine(c, self.database, self.lifetimes, now))

    async def report_candidates(self, kinds: tuple[str, ...], until: datetime,
                                max_items: int) -> dict[str, list[dict[str, Any]]]:
        """Per recipient, the quarantined messages not listed in a report to them yet (see `queries`)."""
        return await self.run("report_candidates", lambda c: queries.report_candidates(
            c, self.database, self.lifetimes, until, kinds, max_items))

    async def last_report_run(self) -> datetime | None:
        return await self.run("last_report_run", lambda c: queries.last_report_run(c, self.database))

    async def record_reports(self, reports: list[tuple[str, list[str], str]], run_at: datetime) -> None:
        """The messages listed in spam reports: (recipient, message ids, report id) each."""
        await self.insert(Batch(QUARANTINE_REPORTS, [
            [recipient.lower(), message_id, run_at, report_id]
            for recipient, message_ids, report_id in reports for message_id in message_ids]))

    async def record_report_run(self, run_at: datetime) -> None:
        """A run of the spam report schedule (whether or not it sent anything)."""
        await self.insert(Batch(QUARANTINE_REPORTS, [["", "", run_at, ""]]))

    async def dead_letters(self, window: queries.Window) -> dict[str, Any]:
        return await self.run("dead_letters", lambda c: queries.dead_letters(c, self.database, window))
