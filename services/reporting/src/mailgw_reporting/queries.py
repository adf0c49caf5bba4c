"""Read queries of the reporting API (synchronous: the store runs them on its thread).

No query relies on ReplacingMergeTree merges having happened: duplicates of an event (at-least-once
delivery) are collapsed by the same identity in every query (GROUP BY, uniqExact, argMax, LIMIT 1 BY).

The state of one recipient of one message is the furthest stage reached, then the latest event in it:
a delivery result (its latest: by time, attempt, final before deferred) > quarantine > the decision
(accepted / blocked / quarantined) > received. Values are bound as server-side parameters
(`{name:Type}`), never formatted into the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from .schema import Lifetimes

COUNT_KEYS = ("received", "delivered", "spam", "virus", "quarantined", "blocked", "rejected", "deferred", "bounced")
FINAL_STATES = ("delivered", "bounced", "quarantined", "blocked")
# SMTP events with a code from 400 up are refusals (temporary 4xx or permanent 5xx).
REFUSAL_MIN_CODE = 400


@dataclass(frozen=True)
class Window:
    """[since, until): a bound left None is open."""

    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class TrackingQuery:
    sender: str = ""
    recipient: str = ""
    window: Window = Window()
    limit: int = 100


# States of a quarantined message: `quarantined` (untouched), `released` (released for at least one
# recipient), `deleted` (hidden from the detail and the raw download; listed only when asked for).
QUARANTINE_STATES = ("quarantined", "released", "deleted")


@dataclass(frozen=True)
class QuarantineQuery:
    sender: str = ""
    recipient: str = ""
    kind: str = ""
    limit: int = 100
    # One of QUARANTINE_STATES, "any", or "" (the default: every state but deleted).
    state: str = ""
    # Case-insensitive substring of the subject.
    subject: str = ""
    # Score range [min_score, max_score], open when None.
    min_score: float | None = None
    max_score: float | None = None
    # On the time the message was received.
    window: Window = Window()
    # Paging: skip this many messages of the (newest first) list.
    offset: int = 0


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z; naive values from the client are UTC."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _millis(value: datetime) -> int:
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return int(value.timestamp() * 1000)


class Conditions:
    """WHERE clauses with their bound parameters; conditions of one query share one `params` dict."""

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.clauses: list[str] = []
        self.params: dict[str, Any] = params if params is not None else {}

    def _param(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"

    def window(self, column: str, window: Window) -> Conditions:
        if window.since is not None:
            since = self._param(_millis(window.since), "Int64")
            self.clauses.append(f"{column} >= fromUnixTimestamp64Milli({since}, 'UTC')")
        if window.until is not None:
            until = self._param(_millis(window.until), "Int64")
            self.clauses.append(f"{column} < fromUnixTimestamp64Milli({until}, 'UTC')")
        return self

    def address_expr(self, column: str, value: str) -> str:
        """`a@b.c` matches that address, `@b.c` any address of the domain (case-insensitive)."""
        value = value.lower()
        if value.startswith("@"):
            return f"endsWith(lower({column}), {self._param(value, 'String')})"
        return f"lower({column}) = {self._param(value, 'String')}"

    def address(self, column: str, value: str) -> Conditions:
        if value:
            self.clauses.append(self.address_expr(column, value))
        return self

    def address_in(self, array_column: str, value: str) -> Conditions:
        if value:
            self.clauses.append(f"arrayExists(x -> {self.address_expr('x', value)}, {array_column})")
        return self

    def add(self, clause: str, **params: tuple[Any, str]) -> Conditions:
        """A literal clause; `{name}` placeholders are replaced by bound parameters."""
        bound = {name: self._param(value, kind) for name, (value, kind) in params.items()}
        self.clauses.append(clause.format(**bound))
        return self

    def sql(self, prefix: str = "WHERE") -> str:
        """`WHERE a AND b` (or `AND a AND b` with prefix="AND"), empty without clauses."""
        return f"{prefix} " + " AND ".join(self.clauses) if self.clauses else ""


# -- recipient states ----------------------------------------------------------------------------

STATE_SOURCES = """
    LEFT JOIN (
        SELECT message_id, any(received_at) AS m_received_at, any(sender) AS m_sender, any(subject) AS m_subject,
               any(client_ip) AS m_client_ip, any(direction) AS m_direction, 1 AS m_has
        FROM {db}.messages {ids} GROUP BY message_id
    ) AS m USING (message_id)
    LEFT JOIN (
        SELECT message_id, recipient, max(decided_at) AS a_decided_at,
               argMax(received_at, decided_at) AS a_received_at, argMax(sender, decided_at) AS a_sender,
               argMax(subject, decided_at) AS a_subject, argMax(client_ip, decided_at) AS a_client_ip,
               argMax(direction, decided_at) AS a_direction, argMax(fate, decided_at) AS a_fate,
               argMax(rule, decided_at) AS a_rule, argMax(score, decided_at) AS a_score,
               argMax(symbol_names, decided_at) AS a_symbol_names,
               argMax(symbol_scores, decided_at) AS a_symbol_scores,
               argMax(symbol_details, decided_at) AS a_symbol_details, argMax(viruses, decided_at) AS a_viruses,
               1 AS a_has
        FROM {db}.actions {ids} GROUP BY message_id, recipient
    ) AS a USING (message_id, recipient)
    LEFT JOIN (
        SELECT message_id, recipient,
               argMax(tuple(status, at, attempt, smtp_code, smtp_response, relay),
                      tuple(at, attempt, status IN ('delivered', 'bounced', 'quarantined', 'blocked'))) AS d_last,
               1 AS d_has
        FROM {db}.delivery {ids} GROUP BY message_id, recipient
    ) AS d USING (message_id, recipient)
    LEFT JOIN (
        SELECT message_id, arrayJoin(recipients) AS recipient, max(quarantined_at) AS q_at,
               any(received_at) AS q_received_at, any(sender) AS q_sender, any(subject) AS q_subject, 1 AS q_has
        FROM {db}.quarantine {ids} GROUP BY message_id, recipient
    ) AS q USING (message_id, recipient)
"""

KEYS = """
    SELECT message_id, recipient FROM (
        SELECT message_id, arrayJoin(recipients) AS recipient FROM {db}.messages {ids}
        UNION ALL SELECT message_id, recipient FROM {db}.actions {ids}
        UNION ALL SELECT message_id, recipient FROM {db}.delivery {ids}
        UNION ALL SELECT message_id, arrayJoin(recipients) AS recipient FROM {db}.quarantine {ids}
    ) {recipient} GROUP BY message_id, recipient
"""

STATUS = """
    multiIf(d_has = 1, tupleElement(d_last, 1), q_has = 1, 'quarantined',
            a_has = 1, multiIf(a_fate = 'accept', 'accepted', a_fate = 'block', 'blocked',
                               a_fate = 'quarantine', 'quarantined', toString(a_fate)),
            'received') AS status,
    multiIf(d_has = 1, tupleElement(d_last, 2), q_has = 1, q_at, a_has = 1, a_decided_at, m_received_at) AS status_at
"""


# The same states as STATUS over the joined sources, computed with one aggregation (about twice as fast as
# the joins, for the summary over every recipient): the event with the greatest (stage, time, attempt,
# final) wins.
STATES = """
    SELECT message_id, recipient, argMax(st, k) AS status, argMax(ts, k) AS status_at FROM (
        SELECT message_id, arrayJoin(recipients) AS recipient, 'received' AS st, received_at AS ts,
               tuple(0, received_at, 0, 0) AS k
        FROM {db}.messages
        UNION ALL
        SELECT message_id, recipient,
               multiIf(fate = 'accept', 'accepted', fate = 'block', 'blocked', fate = 'quarantine', 'quarantined',
                       toString(fate)),
               decided_at, tuple(1, decided_at, 0, 0)
        FROM {db}.actions
        UNION ALL
        SELECT message_id, arrayJoin(recipients), 'quarantined', quarantined_at, tuple(2, quarantined_at, 0, 0)
        FROM {db}.quarantine
        UNION ALL
        SELECT message_id, recipient, toString(status), at,
               tuple(3, at, attempt, status IN ('delivered', 'bounced', 'quarantined', 'blocked'))
        FROM {db}.delivery
    ) GROUP BY message_id, recipient
"""


def _states_from(db: str, ids: str, recipient: str) -> str:
    """FROM clause of one row per (message, recipient) with every source joined."""
    keys = KEYS.format(db=db, ids=ids, recipient=recipient)
    return f"FROM ({keys}) AS k {STATE_SOURCES.format(db=db, ids=ids)}"


# -- summary -------------------------------------------------------------------------------------


def summary(client: Client, db: str, window: Window) -> dict[str, Any]:
    messages: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)
    recipients: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)

    c = Conditions().window("received_at", window)
    row = client.query(
        f"""SELECT count(), sum(n) FROM (
                SELECT message_id, any(length(arrayDistinct(recipients))) AS n FROM {db}.messages {c.sql()}
                GROUP BY message_id)""",
        parameters=c.params,
    ).result_rows[0]
    messages["received"], recipients["received"] = int(row[0]), int(row[1] or 0)

    # Spam: the latest decision of each recipient marks it spam (by decision time).
    c = Conditions().window("at", window)
    row = client.query(
        f"""SELECT uniqExactIf(message_id, spam), countIf(spam) FROM (
                SELECT message_id, recipient, argMax(spam, decided_at) AS spam, max(decided_at) AS at
                FROM {db}.actions GROUP BY message_id, recipient
            ) {c.sql()}""",
        parameters=c.params,
    ).result_rows[0]
    messages["spam"], recipients["spam"] = int(row[0]), int(row[1])

    # Virus: the latest decision of a recipient lists a virus (by decision time), or an antivirus
    # verdict found one in a message received in the window.
    params: dict[str, Any] = {}
    ca = Conditions(params).window("at", window)
    cm = Conditions(params).window("received_at", window)
    row = client.query(
        f"""SELECT uniqExact(message_id), count() FROM (
                SELECT message_id, recipient FROM (
                    SELECT message_id, recipient, max(decided_at) AS at,
                           argMax(notEmpty(viruses), decided_at) AS virus
                    FROM {db}.actions GROUP BY message_id, recipient
                ) WHERE virus {ca.sql("AND")}
                UNION DISTINCT
                SELECT message_id, recipient FROM {db}.messages ARRAY JOIN recipients AS recipient
                WHERE message_id IN (SELECT message_id FROM {db}.verdicts WHERE notEmpty(viruses)) {cm.sql("AND")}
            )""",
        parameters=params,
    ).result_rows[0]
    messages["virus"], recipients["virus"] = int(row[0]), int(row[1])

    # Current states: delivered, bounced, quarantined, blocked, deferred (by the time of that state).
    cs = Conditions().window("status_at", window)
    counts = ", ".join(f"uniqExactIf(message_id, status = '{s}'), countIf(status = '{s}')"
                       for s in (*FINAL_STATES, "deferred"))
    row = client.query(
        f"SELECT {counts} FROM ({STATES.format(db=db)}) {cs.sql()}",
        parameters=cs.params,
    ).result_rows[0]
    for i, state in enumerate((*FINAL_STATES, "deferred")):
        messages[state], recipients[state] = int(row[2 * i]), int(row[2 * i + 1])

    # Refused at SMTP time: each refusal counts (there is no message); recipients: refusals of a RCPT.
    cr = Conditions().window("at", window).add("code >= {code}", code=(REFUSAL_MIN_CODE, "UInt16"))
    row = client.query(
        f"SELECT uniqExact(event_id), uniqExactIf(event_id, rcpt != '') FROM {db}.smtp_events {cr.sql()}",
        parameters=cr.params,
    ).result_rows[0]
    messages["rejected"], recipients["rejected"] = int(row[0]), int(row[1])
    return {**messages, "recipients": recipients}


# -- tracking ------------------------------------------------------------------------------------


def _symbols(names: list[str], scores: list[float], details: list[str]) -> list[dict[str, Any]]:
    items = [{"name": n, "score": float(s), "detail": d} for n, s, d in zip(names, scores, details, strict=False)]
    return sorted(items, key=lambda item: item["score"], reverse=True)


def tracking(client: Client, db: str, query: TrackingQuery) -> list[dict[str, Any]]:
    """Messages (one row per recipient) and SMTP refusals, newest first, at most `query.limit` rows."""
    rows = _tracked_messages(client, db, query) + _refusals(client, db, query)
    rows.sort(key=lambda r: (r["received_at"] or "", r["message_id"] or ""), reverse=True)
    return rows[: query.limit]


def _tracked_messages(client: Client, db: str, query: TrackingQuery) -> list[dict[str, Any]]:
    # First the newest `limit` messages that match: they hold the newest `limit` rows (one or more
    # each). Then every source, restricted to those ids (a query with the ids as an array parameter
    # is 3-4 times faster than one repeating the id subquery in each join).
    cid = Conditions().window("received_at", query.window).address("sender", query.sender)
    cid.address_in("recipients", query.recipient)
    ids = [row[0] for row in client.query(
        f"""SELECT message_id FROM (
                SELECT message_id, received_at, sender, recipients FROM {db}.messages
                UNION ALL SELECT message_id, received_at, sender, [recipient] FROM {db}.actions
                UNION ALL SELECT message_id, received_at, sender, recipients FROM {db}.quarantine
            ) {cid.sql()}
            GROUP BY message_id ORDER BY max(received_at) DESC, message_id DESC LIMIT {{limit:UInt32}}""",
        parameters={**cid.params, "limit": query.limit},
    ).result_rows]
    if not ids:
        return []
    params: dict[str, Any] = {"ids": ids, "limit": query.limit}
    id_filter = "WHERE message_id IN {ids:Array(String)}"
    rcpt_sql = Conditions(params).address("recipient", query.recipient).sql()
    # The sources may disagree (a message known only from its decision): filter on what is shown.
    cf = Conditions(params).window("received_at", query.window).address("sender", query.sender)
    sql = f"""
        SELECT message_id, recipient,
               multiIf(m_has = 1, m_received_at, a_has = 1, a_received_at, q_received_at) AS received_at,
               multiIf(m_has = 1, m_sender, a_has = 1, a_sender, q_sender) AS sender,
               multiIf(m_has = 1, m_subject, a_has = 1, a_subject, q_subject) AS subject,
               if(m_has = 1, m_client_ip, a_client_ip) AS client_ip,
               if(m_has = 1, m_direction, a_direction) AS direction,
               {STATUS},
               a_has, a_score, a_rule, a_symbol_names, a_symbol_scores, a_symbol_details,
               arraySort(arrayDistinct(arrayConcat(a_viruses, v_viruses))) AS viruses,
               d_has, d_last
        {_states_from(db, id_filter, rcpt_sql)}
        LEFT JOIN (
            SELECT message_id, groupUniqArrayArray(viruses) AS v_viruses FROM {db}.verdicts {id_filter}
            GROUP BY message_id
        ) AS v USING (message_id)
        {cf.sql()}
        ORDER BY received_at DESC, message_id DESC, recipient
        LIMIT {{limit:UInt32}}"""
    out: list[dict[str, Any]] = []
    for r in client.query(sql, parameters=params).named_results():
        last = r["d_last"]
        out.append({
            "message_id": r["message_id"],
            "received_at": iso(r["received_at"]),
            "sender": r["sender"],
            "recipient": r["recipient"],
            "subject": r["subject"],
            "client_ip": r["client_ip"],
            "direction": r["direction"],
            "status": r["status"],
            "status_at": iso(r["status_at"]),
            "score": float(r["a_score"]) if r["a_has"] else None,
            "rule": r["a_rule"] if r["a_has"] else "",
            "symbols": _symbols(r["a_symbol_names"], r["a_symbol_scores"], r["a_symbol_details"]) if r["a_has"] else [],
            "viruses": list(r["viruses"]),
            "last_response": {
                "status": last[0], "at": iso(last[1]), "attempt": int(last[2]), "smtp_code": int(last[3]),
                "smtp_response": last[4], "relay": last[5],
            } if r["d_has"] else None,
            "reason": None,
        })
    return out


def _refusals(client: Client, db: str, query: TrackingQuery) -> list[dict[str, Any]]:
    c = (Conditions().add("code >= {code}", code=(REFUSAL_MIN_CODE, "UInt16"))
         .window("at", query.window).address("sender", query.sender).address("rcpt", query.recipient))
    sql = f"""
        SELECT event_id, at, client_ip, helo, sender, rcpt, reason, check, code, session_id
        FROM {db}.smtp_events {c.sql()}
        ORDER BY at DESC, event_id LIMIT 1 BY event_id LIMIT {{limit:UInt32}}"""
    return [
        {
            "message_id": None,
            "received_at": iso(r["at"]),
            "sender": r["sender"],
            "recipient": r["rcpt"],
            "subject": "",
            "client_ip": r["client_ip"],
            "direction": "",
            "status": "rejected",
            "status_at": iso(r["at"]),
            "score": None,
            "rule": r["check"],
            "symbols": [],
            "viruses": [],
            "last_response": None,
            "reason": {"check": r["check"], "code": int(r["code"]), "text": r["reason"], "helo": r["helo"],
                       "session_id": r["session_id"]},
        }
        for r in client.query(sql, parameters={**c.params, "limit": query.limit}).named_results()
    ]


# -- quarantine ----------------------------------------------------------------------------------

# Output names differ from the column names: an alias would shadow its column in WHERE.
# `{expires}` is the lifetime expression of `Lifetimes.expires_sql`.
QUARANTINE_FIELDS = """
    message_id AS id,
    arrayStringConcat(arraySort(groupUniqArray(kind)), ',') AS o_kind,
    any(sender) AS o_sender,
    arraySort(groupUniqArrayArray(recipients)) AS o_recipients,
    any(subject) AS o_subject,
    max(score) AS o_score,
    min(received_at) AS o_received_at,
    min(quarantined_at) AS o_quarantined_at,
    max({expires}) AS o_expires_at,
    max(size) AS o_size
"""


def _fields(lifetimes: Lifetimes) -> str:
    return QUARANTINE_FIELDS.replace("{expires}", lifetimes.expires_sql())


def _alive(lifetimes: Lifetimes, now: datetime) -> Conditions:
    # Rows past their lifetime go at the next expiry run (or merge); until then they are hidden here.
    return Conditions().add(f"{lifetimes.expires_sql()} > fromUnixTimestamp64Milli({{now}}, 'UTC')",
                            now=(_millis(now), "Int64"))


def _ops_ids(db: str, op: str) -> str:
    return f"(SELECT message_id FROM {db}.quarantine_ops WHERE op = '{op}')"


def _state_filter(c: Conditions, db: str, state: str) -> Conditions:
    deleted, released = _ops_ids(db, "deleted"), _ops_ids(db, "released")
    if state == "":
        c.add(f"message_id NOT IN {deleted}")
    elif state == "quarantined":
        c.add(f"message_id NOT IN {deleted}").add(f"message_id NOT IN {released}")
    elif state == "released":
        c.add(f"message_id IN {released}").add(f"message_id NOT IN {deleted}")
    elif state == "deleted":
        c.add(f"message_id IN {deleted}")
    elif state != "any":
        raise ValueError(f"unknown quarantine state {state!r}")
    return c


def quarantine_states(client: Client, db: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """`state`, `released_at`, `released_to` (recipients released so far), `deleted_at` and `dismissed_by`
    (recipients who deleted their copy with a report link; the message stays for the others) of each message."""
    out: dict[str, dict[str, Any]] = {
        i: {"state": "quarantined", "released_at": None, "released_to": [], "deleted_at": None, "dismissed_by": []}
        for i in ids}
    if not ids:
        return out
    rows = client.query(
        f"""SELECT message_id, op, at, recipients FROM {db}.quarantine_ops WHERE message_id IN {{ids:Array(String)}}
            ORDER BY at LIMIT 1 BY message_id, op_id""",
        parameters={"ids": ids},
    ).result_rows
    released: dict[str, set[str]] = {}
    dismissed: dict[str, set[str]] = {}
    for message_id, op, at, recipients in rows:
        info = out[message_id]
        if op == "deleted":
            info["deleted_at"] = iso(at)
        elif op == "dismissed":
            dismissed.setdefault(message_id, set()).update(r.lower() for r in recipients)
        elif op == "released":
            info["released_at"] = iso(at)
            released.setdefault(message_id, set()).update(recipients)
    for message_id, info in out.items():
        info["released_to"] = sorted(released.get(message_id, ()))
        info["dismissed_by"] = sorted(dismissed.get(message_id, ()))
        info["state"] = "deleted" if info["deleted_at"] else "released" if info["released_at"] else "quarantined"
    return out


def _quarantine_item(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "kind": r["o_kind"],
        "sender": r["o_sender"],
        "recipients": list(r["o_recipients"]),
        "subject": r["o_subject"],
        "score": float(r["o_score"]),
        "received_at": iso(r["o_received_at"]),
        "quarantined_at": iso(r["o_quarantined_at"]),
        "expires_at": iso(r["o_expires_at"]),
        "size": int(r["o_size"]),
    }


def quarantine_list(client: Client, db: str, lifetimes: Lifetimes, now: datetime,
                    query: QuarantineQuery) -> list[dict[str, Any]]:
    c = _alive(lifetimes, now).address("sender", query.sender).address_in("recipients", query.recipient)
    c.window("received_at", query.window)
    if query.kind:
        c.add("kind = {kind}", kind=(query.kind, "String"))
    if query.subject:
        c.add("positionCaseInsensitiveUTF8(subject, {subject}) > 0", subject=(query.subject, "String"))
    if query.min_score is not None:
        c.add("score >= {min_score}", min_score=(query.min_score, "Float64"))
    if query.max_score is not None:
        c.add("score <= {max_score}", max_score=(query.max_score, "Float64"))
    _state_filter(c, db, query.state)
    sql = f"""SELECT {_fields(lifetimes)} FROM {db}.quarantine {c.sql()}
              GROUP BY message_id ORDER BY o_quarantined_at DESC, message_id DESC
              LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}"""
    params = {**c.params, "limit": query.limit, "offset": query.offset}
    items = [_quarantine_item(r) for r in client.query(sql, parameters=params).named_results()]
    states = quarantine_states(client, db, [i["id"] for i in items])
    return [{**i, **states[i["id"]]} for i in items]


def quarantine_get(client: Client, db: str, lifetimes: Lifetimes, now: datetime, message_id: str,
                   deleted: bool = False) -> dict[str, Any] | None:
    """The item with its rule, symbols, viruses and state; None if unknown, expired or (unless `deleted`) deleted."""
    c = _alive(lifetimes, now).add("message_id = {id}", id=(message_id, "String"))
    _state_filter(c, db, "any" if deleted else "")
    sql = f"""SELECT {_fields(lifetimes)}, arrayStringConcat(arraySort(groupUniqArray(rule)), ',') AS o_rule,
                     argMax(tuple(symbol_names, symbol_scores, symbol_details), score) AS o_symbols,
                     arraySort(groupUniqArrayArray(viruses)) AS o_viruses
              FROM {db}.quarantine {c.sql()} GROUP BY message_id"""
    rows = list(client.query(sql, parameters=c.params).named_results())
    if not rows:
        return None
    r = rows[0]
    names, scores, details = r["o_symbols"]
    return {**_quarantine_item(r), "rule": r["o_rule"], "symbols": _symbols(names, scores, details),
            "viruses": list(r["o_viruses"]), **quarantine_states(client, db, [message_id])[message_id]}


def quarantine_raw(client: Client, db: str, lifetimes: Lifetimes, now: datetime, message_id: str) -> bytes | None:
    c = _alive(lifetimes, now).add("message_id = {id}", id=(message_id, "String"))
    _state_filter(c, db, "")
    result = client.query(f"SELECT raw FROM {db}.quarantine {c.sql()} LIMIT 1", parameters=c.params,
                          column_formats={"raw": "bytes"})
    if not result.result_rows:
        return None
    raw = result.result_rows[0][0]
    return bytes(raw)


def expire_quarantine(client: Client, db: str, lifetimes: Lifetimes, now: datetime) -> int:
    """Delete the rows past their lifetime at `now` (a lightweight DELETE); the number of rows deleted."""
    c = Conditions().add(f"{lifetimes.expires_sql()} <= fromUnixTimestamp64Milli({{now}}, 'UTC')",
                         now=(_millis(now), "Int64"))
    count = int(client.query(f"SELECT count() FROM {db}.quarantine {c.sql()}", parameters=c.params).result_rows[0][0])
    if count:
        client.command(f"DELETE FROM {db}.quarantine {c.sql()}", parameters=c.params)
    return count


def report_candidates(client: Client, db: str, lifetimes: Lifetimes, until: datetime, kinds: tuple[str, ...],
                      max_items: int) -> dict[str, list[dict[str, Any]]]:
    """For each recipient (lower case), the messages of `kinds` quarantined up to `until` that are still
    there for them (not deleted, not released to them, not expired) and were not listed in a report to
    them yet; newest first, at most `max_items` per recipient, each with `total` (how many there are)."""
    c = _alive(lifetimes, until).add("quarantined_at <= fromUnixTimestamp64Milli({until}, 'UTC')",
                                     until=(_millis(until), "Int64"))
    c.add("kind IN {kinds}", kinds=(list(kinds), "Array(String)"))
    c.add(f"message_id NOT IN {_ops_ids(db, 'deleted')}")
    sql = f"""
        SELECT recipient, message_id, any(sender) AS o_sender, any(subject) AS o_subject, max(score) AS o_score,
               arrayStringConcat(arraySort(groupUniqArray(kind)), ',') AS o_kind,
               min(received_at) AS o_received_at, max(quarantined_at) AS o_quarantined_at,
               count() OVER (PARTITION BY recipient) AS o_total
        FROM (SELECT message_id, sender, subject, score, kind, received_at, quarantined_at,
                     lower(arrayJoin(recipients)) AS recipient
              FROM {db}.quarantine {c.sql()})
        WHERE (message_id, recipient) NOT IN (
                  SELECT message_id, recipient FROM {db}.quarantine_reports WHERE recipient != '')
          AND (message_id, recipient) NOT IN (
                  SELECT message_id, lower(arrayJoin(recipients)) FROM {db}.quarantine_ops
                  WHERE op IN ('released', 'dismissed'))
        GROUP BY recipient, message_id
        ORDER BY recipient, o_quarantined_at DESC, message_id DESC
        LIMIT {{max_items:UInt32}} BY recipient"""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in client.query(sql, parameters={**c.params, "max_items": max_items}).named_results():
        out.setdefault(r["recipient"], []).append({
            "id": r["message_id"], "kind": r["o_kind"], "sender": r["o_sender"], "subject": r["o_subject"],
            "score": float(r["o_score"]), "received_at": iso(r["o_received_at"]),
            "quarantined_at": iso(r["o_quarantined_at"]), "total": int(r["o_total"]),
        })
    return out


def last_report_run(client: Client, db: str) -> datetime | None:
    rows = client.query(f"SELECT max(run_at), count() FROM {db}.quarantine_reports WHERE recipient = ''").result_rows
    if not rows or not rows[0][1]:
        return None
    at: datetime = rows[0][0]
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def message_origin(client: Client, db: str, message_id: str) -> tuple[str, str]:
    """(direction, client ip) of a message from its receipt or its decision; ("", "") when neither is stored."""
    rows = client.query(
        f"""SELECT direction, client_ip FROM (
                SELECT direction, client_ip, 0 AS pref FROM {db}.messages WHERE message_id = {{id:String}}
                UNION ALL
                SELECT direction, client_ip, 1 AS pref FROM {db}.actions WHERE message_id = {{id:String}}
            ) ORDER BY pref LIMIT 1""",
        parameters={"id": message_id},
    ).result_rows
    return (str(rows[0][0]), str(rows[0][1])) if rows else ("", "")


# -- dead letters --------------------------------------------------------------------------------


def dead_letters(client: Client, db: str, window: Window) -> dict[str, Any]:
    c = Conditions().window("at", window)
    sql = f"""SELECT topic, uniqExact(partition, offset) AS n, uniqExactIf((partition, offset), error != '') AS e
              FROM {db}.dead_letters {c.sql()} GROUP BY topic ORDER BY topic"""
    rows = client.query(sql, parameters=c.params).result_rows
    return {
        "total": sum(int(r[1]) for r in rows),
        "topics": {r[0]: {"records": int(r[1]), "with_error": int(r[2])} for r in rows},
    }
