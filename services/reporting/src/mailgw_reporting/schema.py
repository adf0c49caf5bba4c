"""The reporting tables: columns, engines and sort keys, defined once.

Every event may arrive twice (at-least-once), so each table is a ReplacingMergeTree whose sort key
is the identity of one fact (a message, one scorer's verdict, one recipient's decision, one delivery
attempt...). Identical redeliveries collapse when parts merge; until then every query deduplicates
by the same key (GROUP BY / uniqExact / argMax / LIMIT 1 BY), so counts never depend on merges.

Inserts name their column types (`column_type_names`), so the client needs no DESCRIBE round trip.
New columns can be added here: `ReportStore.open` adds the missing ones to existing tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

TS = "DateTime64(3, 'UTC')"
SYMBOL_COLUMNS = (
    ("symbol_names", "Array(String)"),
    ("symbol_scores", "Array(Float64)"),
    ("symbol_details", "Array(String)"),
)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    engine: str
    order_by: str
    partition_by: str = ""
    ttl: str = ""
    codecs: tuple[tuple[str, str], ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def column_types(self) -> list[str]:
        return [kind for _, kind in self.columns]

    def create_sql(self, database: str) -> str:
        codecs = dict(self.codecs)
        cols = ",\n  ".join(
            f"`{name}` {kind}" + (f" CODEC({codecs[name]})" if name in codecs else "") for name, kind in self.columns
        )
        parts = [f"CREATE TABLE IF NOT EXISTS {database}.{self.name} (\n  {cols}\n)", f"ENGINE = {self.engine}"]
        if self.partition_by:
            parts.append(f"PARTITION BY {self.partition_by}")
        parts.append(f"ORDER BY {self.order_by}")
        if self.ttl:
            parts.append(f"TTL {self.ttl}")
        return "\n".join(parts)


MESSAGES = Table(
    "messages",
    (
        ("message_id", "String"),
        ("received_at", TS),
        ("client_ip", "String"),
        ("helo", "String"),
        ("sender", "String"),
        ("recipients", "Array(String)"),
        ("direction", "LowCardinality(String)"),
        ("size", "UInt64"),
        ("tls", "Bool"),
        ("tls_version", "LowCardinality(String)"),
        ("tls_cipher", "LowCardinality(String)"),
        ("subject", "String"),
        ("header_from", "String"),
        ("rfc_message_id", "String"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(received_at)",
    order_by="message_id",
)

VERDICTS = Table(
    "verdicts",
    (
        ("message_id", "String"),
        ("scorer", "LowCardinality(String)"),
        ("score", "Float64"),
        *SYMBOL_COLUMNS,
        ("viruses", "Array(String)"),
        ("failed", "Bool"),
        ("error", "String"),
        ("duration_ms", "Float64"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree(ingested_at)",
    order_by="(message_id, scorer)",
)

# One row per recipient decision; a later decision on the same recipient replaces an earlier one.
ACTIONS = Table(
    "actions",
    (
        ("message_id", "String"),
        ("recipient", "String"),
        ("decided_at", TS),
        ("received_at", TS),
        ("sender", "String"),
        ("direction", "LowCardinality(String)"),
        ("client_ip", "String"),
        ("subject", "String"),
        ("fate", "LowCardinality(String)"),
        ("rule", "String"),
        ("spam", "Bool"),
        ("quarantine_kind", "LowCardinality(String)"),
        ("subject_tag", "String"),
        ("score", "Float64"),
        *SYMBOL_COLUMNS,
        ("viruses", "Array(String)"),
        ("missing_scorers", "Array(String)"),
        ("failed_scorers", "Array(String)"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree(decided_at)",
    partition_by="toYYYYMM(received_at)",
    order_by="(message_id, recipient)",
)

# One row per delivery attempt outcome of one recipient.
DELIVERY = Table(
    "delivery",
    (
        ("message_id", "String"),
        ("recipient", "String"),
        ("status", "LowCardinality(String)"),
        ("at", TS),
        ("attempt", "UInt32"),
        ("smtp_code", "UInt16"),
        ("smtp_response", "String"),
        ("next_attempt_at", f"Nullable({TS})"),
        ("relay", "String"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(at)",
    order_by="(message_id, recipient, at, attempt, status)",
)


# Quarantined messages with their raw bytes: one row per (message, kind, rule), as delivery publishes
# one event per (kind, rule) of the quarantined recipients. The store adds the TTL (the quarantine
# lifetime setting, see `all_tables`).
QUARANTINE = Table(
    "quarantine",
    (
        ("message_id", "String"),
        ("kind", "LowCardinality(String)"),
        ("recipients", "Array(String)"),
        ("sender", "String"),
        ("subject", "String"),
        ("score", "Float64"),
        *SYMBOL_COLUMNS,
        ("viruses", "Array(String)"),
        ("rule", "String"),
        ("received_at", TS),
        ("quarantined_at", TS),
        ("size", "UInt64"),
        ("raw", "String"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree",
    order_by="(message_id, kind, rule)",
    codecs=(("raw", "ZSTD(3)"),),
)


_KIND_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Lifetimes:
    """How many days a quarantined message is kept, per kind (spam, virus, attachment, ...).

    The expiry is computed from the row (`expires_sql`), not stored in it: a changed setting
    applies to the messages already in quarantine, through the TTL and the queries alike.
    """

    default_days: int = 7
    per_kind: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for kind, days in ((k, d) for k, d in self.per_kind):
            if not _KIND_NAME.match(kind):
                raise ValueError(f"quarantine kind must be a word like spam or virus, got {kind!r}")
            if not 1 <= int(days) <= 3650:
                raise ValueError(f"quarantine lifetime of {kind} must be 1..3650 days, got {days}")
        if not 1 <= int(self.default_days) <= 3650:
            raise ValueError(f"quarantine lifetime must be 1..3650 days, got {self.default_days}")

    @classmethod
    def of(cls, default_days: int, per_kind: Mapping[str, int] | None = None) -> Lifetimes:
        return cls(int(default_days), tuple(sorted((k, int(d)) for k, d in (per_kind or {}).items())))

    def days(self, kind: str) -> int:
        return dict(self.per_kind).get(kind, self.default_days)

    @property
    def longest(self) -> int:
        return max([self.default_days, *(d for _, d in self.per_kind)])

    def days_sql(self, kind_column: str = "kind") -> str:
        """The lifetime in days of a row, as SQL (integers and checked kind names only: no parameters needed)."""
        distinct = [(k, d) for k, d in self.per_kind if d != self.default_days]
        if not distinct:
            return str(int(self.default_days))
        branches = ", ".join(f"{kind_column} = '{k}', {int(d)}" for k, d in distinct)
        return f"multiIf({branches}, {int(self.default_days)})"

    def expires_sql(self, kind_column: str = "kind", at_column: str = "quarantined_at", ttl: bool = False) -> str:
        """When a row expires; for the TTL clause (`ttl=True`) in whole seconds, as TTL wants a DateTime."""
        at = f"toDateTime({at_column})" if ttl else at_column
        return f"{at} + toIntervalDay({self.days_sql(kind_column)})"


def quarantine_ttl(lifetimes: Lifetimes | int) -> str:
    """TTL expression of the quarantine table: rows go their kind's lifetime after quarantined_at."""
    if isinstance(lifetimes, int):
        lifetimes = Lifetimes(lifetimes)
    return lifetimes.expires_sql(ttl=True)


# Operations on quarantined messages (release, delete), one row each; `op_id` identifies one operation
# (a release's id is the `release_id` of the action it published). Rows live as long as the quarantine
# lifetime after the operation, so they outlive the message they are about.
QUARANTINE_OPS = Table(
    "quarantine_ops",
    (
        ("message_id", "String"),
        ("op", "LowCardinality(String)"),
        ("op_id", "String"),
        ("at", TS),
        ("recipients", "Array(String)"),
    ),
    engine="ReplacingMergeTree",
    order_by="(message_id, op_id)",
)


def quarantine_ops_ttl(days: int) -> str:
    return f"toDateTime(at) + toIntervalDay({int(days)})"


# Spam reports (the quarantine digest): one row per message listed in a recipient's report (a later
# report lists only the messages not listed yet, however late they were stored), and one row with
# recipient and message '' per run (sent or not), which the schedule reads. Kept as long as the
# longest quarantine lifetime (see `all_tables`): a message is never listed twice while it exists.
QUARANTINE_REPORTS = Table(
    "quarantine_reports",
    (
        ("recipient", "String"),
        ("message_id", "String"),
        ("run_at", TS),
        ("report_id", "String"),
    ),
    engine="ReplacingMergeTree",
    order_by="(recipient, message_id)",
)


def quarantine_reports_ttl(days: int) -> str:
    return f"toDateTime(run_at) + toIntervalDay({int(days) + 1})"


# SMTP-time refusals; `event_id` is a digest of the event, so a redelivered event has the same id.
SMTP_EVENTS = Table(
    "smtp_events",
    (
        ("event_id", "String"),
        ("at", TS),
        ("client_ip", "String"),
        ("helo", "String"),
        ("sender", "String"),
        ("rcpt", "String"),
        ("reason", "String"),
        ("check", "LowCardinality(String)"),
        ("code", "UInt16"),
        ("session_id", "String"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(at)",
    order_by="(at, event_id)",
)

# Records of the dead-letter topics; a record is identified by its place in the log.
DEAD_LETTERS = Table(
    "dead_letters",
    (
        ("topic", "LowCardinality(String)"),
        ("partition", "Int32"),
        ("offset", "Int64"),
        ("at", TS),
        ("key", "String"),
        ("error", "String"),
        ("service", "LowCardinality(String)"),
        ("source_topic", "LowCardinality(String)"),
        ("source_partition", "Int32"),
        ("source_offset", "Int64"),
        ("size", "UInt64"),
        ("ingested_at", TS),
    ),
    engine="ReplacingMergeTree",
    order_by="(topic, partition, offset)",
)


def all_tables(lifetimes: Lifetimes | int) -> list[Table]:
    if isinstance(lifetimes, int):
        lifetimes = Lifetimes(lifetimes)
    quarantine = replace(QUARANTINE, ttl=quarantine_ttl(lifetimes))
    ops = replace(QUARANTINE_OPS, ttl=quarantine_ops_ttl(lifetimes.longest))
    reports = replace(QUARANTINE_REPORTS, ttl=quarantine_reports_ttl(lifetimes.longest))
    return [MESSAGES, VERDICTS, ACTIONS, DELIVERY, quarantine, ops, SMTP_EVENTS, DEAD_LETTERS, reports]
