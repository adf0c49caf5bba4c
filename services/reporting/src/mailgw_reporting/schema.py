"""The reporting tables: columns, engines and sort keys, defined once.

Every event may arrive twice (at-least-once), so each table is a ReplacingMergeTree whose sort key
is the identity of one fact (a message, one scorer's verdict, one recipient's decision, one delivery
attempt...). Identical redeliveries collapse when parts merge; until then every query deduplicates
by the same key (GROUP BY / uniqExact / argMax / LIMIT 1 BY), so counts never depend on merges.

Inserts name their column types (`column_type_names`), so the client needs no DESCRIBE round trip.
New columns can be added here: `ReportStore.open` adds the missing ones to existing tables.
"""

from __future__ import annotations

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


def quarantine_ttl(days: int) -> str:
    """TTL expression of the quarantine table: rows go `days` after quarantined_at."""
    return f"toDateTime(quarantined_at) + toIntervalDay({int(days)})"


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


def all_tables(quarantine_days: int) -> list[Table]:
    quarantine = replace(QUARANTINE, ttl=quarantine_ttl(quarantine_days))
    ops = replace(QUARANTINE_OPS, ttl=quarantine_ops_ttl(quarantine_days))
    return [MESSAGES, VERDICTS, ACTIONS, DELIVERY, quarantine, ops, SMTP_EVENTS, DEAD_LETTERS]
