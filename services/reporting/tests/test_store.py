"""The store and its queries on a real ClickHouse (chdb, in process, on the session's data dir)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clickhouse_connect.driver.client import Client

from mailgw_libs import frames, topics
from mailgw_libs.bus import TransientError
from mailgw_libs.events import DeliveryStatus, Fate, SymbolHit, new_message_id
from mailgw_reporting import ingest
from mailgw_reporting.queries import QuarantineQuery, TrackingQuery, Window
from mailgw_reporting.schema import MESSAGES
from mailgw_reporting.store import ReportStore, StoreUnavailable, client_dsn, parse_url, redact

if TYPE_CHECKING:
    from conftest import Scenario


async def test_schema_is_idempotent(store: ReportStore) -> None:
    await store.open()
    await store.run("schema again", store._create_schema)  # what a restart does
    tables = await store.run("tables", lambda c: sorted(r[0] for r in c.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": store.database}
    ).result_rows))
    assert tables == ["actions", "dead_letters", "delivery", "messages", "quarantine", "quarantine_ops",
                      "quarantine_reports", "smtp_events",
                      "verdicts"]
    assert await store.ping() == (True, store.where)


async def test_summary_counts_and_duplicates(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    b, c, d = s.rcpt("bob"), s.rcpt("carol"), s.rcpt("dave")
    # 1: two recipients, both delivered (b after a deferral).
    m1 = s.received([b, c])
    s.action(m1, {b: Fate.ACCEPT, c: Fate.ACCEPT})
    s.delivery(m1.message_id, b, DeliveryStatus.DEFERRED, t=3, code=451, response="4.7.1 later")
    s.delivery(m1.message_id, b, DeliveryStatus.DELIVERED, t=60, attempt=2)
    s.delivery(m1.message_id, c, DeliveryStatus.DELIVERED, t=3)
    # 2: spam, quarantined for one recipient, accepted (and still deferred) for the other.
    m2 = s.received([b, d], t=10)
    s.verdict(m2.message_id, "antispam", [SymbolHit(name="GTUBE", score=1000)])
    s.action(m2, {b: Fate.QUARANTINE, d: Fate.ACCEPT}, spam=True, score=1000, t=11)
    s.quarantine(m2, [b], s.raw("spam"), t=12)
    s.delivery(m2.message_id, d, DeliveryStatus.DEFERRED, t=13, code=421)
    # 3: a virus, blocked for its only recipient.
    m3 = s.received([c], t=20)
    s.verdict(m3.message_id, "antivirus", [], viruses=["Eicar-Test-Signature"])
    s.action(m3, {c: Fate.BLOCK}, viruses=["Eicar-Test-Signature"], t=21, rule="virus")
    s.delivery(m3.message_id, c, DeliveryStatus.BLOCKED, t=22, code=0, response="")
    # 4: bounced.
    m4 = s.received([d], t=30)
    s.action(m4, {d: Fate.ACCEPT}, t=31)
    s.delivery(m4.message_id, d, DeliveryStatus.BOUNCED, t=32, code=550, response="5.1.1 no such user")
    # 5: received only (no decision yet), 6: a virus found only by the scorer, no decision yet.
    s.received([b], t=40)
    m6 = s.received([b, c], t=41)
    s.verdict(m6.message_id, "antivirus", [], viruses=["Other"])
    # Refusals at SMTP time: one per recipient, one at MAIL FROM, and a non-refusal event.
    s.refusal(rcpt=s.rcpt("x"))
    s.refusal(rcpt=s.rcpt("y"))
    s.refusal(rcpt="", reason="sender domain has no MX", check="sender")
    s.refusal(rcpt=s.rcpt("z"), code=250, reason="noted", check="info")

    await s.store_all(store, times=2)  # every event twice: at-least-once delivery

    summary = await store.summary(s.window)
    assert {k: v for k, v in summary.items() if k != "recipients"} == {
        "received": 6, "delivered": 1, "spam": 1, "virus": 2, "quarantined": 1, "blocked": 1,
        "rejected": 3, "deferred": 1, "bounced": 1,
    }
    assert summary["recipients"] == {
        "received": 9, "delivered": 2, "spam": 2, "virus": 3, "quarantined": 1, "blocked": 1,
        "rejected": 2, "deferred": 1, "bounced": 1,
    }
    # Tracking (states from the joined sources) agrees with the summary (states from one aggregation).
    rows = await store.tracking(TrackingQuery(sender=s.sender, window=s.window))
    for state in ("delivered", "bounced", "quarantined", "blocked", "deferred"):
        assert sum(r["status"] == state for r in rows) == summary["recipients"][state], state
        assert len({r["message_id"] for r in rows if r["status"] == state}) == summary[state], state
    # Storing them a third time changes nothing, nor does a merge.
    await s.store_all(store)
    await store.run("optimize", lambda cl: cl.command(f"OPTIMIZE TABLE {store.database}.messages FINAL"))
    assert await store.summary(s.window) == summary
    # The window excludes what happened before or after it.
    later = await store.summary(Window(s.at(35), s.at(3600)))
    assert (later["received"], later["bounced"], later["delivered"], later["rejected"]) == (2, 0, 1, 0)


async def test_tracking_statuses(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    b, c, d = s.rcpt("bob"), s.rcpt("carol"), s.rcpt("dave")
    hits = [SymbolHit(name="LOW", score=0.5), SymbolHit(name="HIGH", score=4.0, detail="why")]
    m1 = s.received([b, c, d], subject="Quarterly report")
    s.action(m1, {b: Fate.ACCEPT, c: Fate.BLOCK, d: Fate.QUARANTINE}, score=4.5, symbols=hits, rule="r1")
    s.delivery(m1.message_id, b, DeliveryStatus.DEFERRED, t=3, code=451, response="4.7.1 greylisted")
    s.delivery(m1.message_id, b, DeliveryStatus.DELIVERED, t=9, attempt=2, code=250, response="2.0.0 ok")
    m2 = s.received([b], t=20)
    m3 = s.received([c], t=30)
    s.action(m3, {c: Fate.ACCEPT}, t=31)
    refusal = s.refusal(rcpt=b, reason="Relay access denied", t=40)
    await s.store_all(store, times=2)

    rows = (await store.tracking(TrackingQuery(sender=s.sender, window=s.window)))
    assert [(r["message_id"], r["recipient"], r["status"]) for r in rows] == [
        (None, b, "rejected"),
        (m3.message_id, c, "accepted"),
        (m2.message_id, b, "received"),
        (m1.message_id, b, "delivered"),
        (m1.message_id, c, "blocked"),
        (m1.message_id, d, "quarantined"),
    ]
    rejected, accepted, received, delivered = rows[0], rows[1], rows[2], rows[3]
    assert rejected["reason"] == {"check": "relay", "code": 554, "text": "Relay access denied", "helo": "bad.test",
                                  "session_id": refusal.session_id}
    assert rejected["received_at"] == s.iso(s.at(40)) and rejected["client_ip"] == "203.0.113.9"
    assert received["score"] is None and received["rule"] == "" and received["last_response"] is None
    assert accepted["score"] == 0.0 and accepted["status_at"] == s.iso(s.at(31))
    assert delivered["subject"] == "Quarterly report" and delivered["client_ip"] == "192.0.2.10"
    assert delivered["score"] == 4.5 and delivered["rule"] == "r1"
    assert delivered["symbols"] == [{"name": "HIGH", "score": 4.0, "detail": "why"},
                                    {"name": "LOW", "score": 0.5, "detail": ""}]
    assert delivered["last_response"] == {"status": "delivered", "at": rows[3]["status_at"], "attempt": 2,
                                          "smtp_code": 250, "smtp_response": "2.0.0 ok", "relay": "127.0.0.1"}
    assert delivered["received_at"] == s.iso(s.at(1))

    # Filters: a recipient, a domain, the limit, and a window.
    only_b = await store.tracking(TrackingQuery(recipient=b.upper(), window=s.window))
    assert [(r["message_id"], r["status"]) for r in only_b] == [
        (None, "rejected"), (m2.message_id, "received"), (m1.message_id, "delivered")]
    domain = await store.tracking(TrackingQuery(sender="@" + s.sender.split("@")[1], limit=2))
    assert [r["status"] for r in domain] == ["rejected", "accepted"]
    early = await store.tracking(TrackingQuery(sender=s.sender, window=Window(s.base, s.at(15))))
    assert {r["message_id"] for r in early} == {m1.message_id}
    assert await store.tracking(TrackingQuery(sender="nobody@nowhere.test")) == []


async def test_tracking_virus_and_a_decision_without_its_receipt(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    b = s.rcpt("bob")
    m1 = s.received([b])
    s.verdict(m1.message_id, "antivirus", [], viruses=["Eicar"])
    s.action(m1, {b: Fate.QUARANTINE}, viruses=["Eicar"], t=2)
    await s.store_all(store)
    # The decision of m2 arrives, its receipt never does (shown from the decision's copy of the envelope).
    m2 = s.received([b], t=10)
    s.events.clear()
    s.action(m2, {b: Fate.ACCEPT}, t=11)
    await s.store_all(store)
    rows = await store.tracking(TrackingQuery(sender=s.sender))
    assert [(r["message_id"], r["status"], r["viruses"]) for r in rows] == [
        (m2.message_id, "accepted", []), (m1.message_id, "quarantined", ["Eicar"])]
    assert rows[0]["received_at"] == s.iso(s.at(10))


async def test_quarantine_list_get_raw(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    b, c = s.rcpt("bob"), s.rcpt("carol")
    raw = s.raw("Win a prize", "GTUBE\r\n\xe9") + bytes(range(256))
    m1 = s.received([b, c], raw=raw)
    hits = [SymbolHit(name="A", score=1.0), SymbolHit(name="GTUBE", score=1000.0, detail="test string")]
    s.quarantine(m1, [b, c], raw, kind="spam", score=1001.0, symbols=hits)
    m2 = s.received([c], t=5)
    s.quarantine(m2, [c], s.raw("virus"), kind="virus", t=6)
    await s.store_all(store, times=2)

    items = await store.quarantine_list(QuarantineQuery(sender=s.sender))
    assert [i["id"] for i in items] == [m2.message_id, m1.message_id]
    first = items[1]
    assert first == {
        "id": m1.message_id, "kind": "spam", "sender": s.sender, "recipients": sorted([b, c]), "subject": "Hello",
        "score": 1001.0, "received_at": s.iso(s.at(1)),
        "quarantined_at": s.iso(s.at(3)),
        "expires_at": s.iso(s.at(3) + timedelta(days=7)),
        "size": len(raw),
        "state": "quarantined", "released_at": None, "released_to": [], "deleted_at": None, "dismissed_by": [],
    }
    assert [i["id"] for i in await store.quarantine_list(QuarantineQuery(sender=s.sender, kind="virus"))] == [
        m2.message_id]
    assert [i["id"] for i in await store.quarantine_list(QuarantineQuery(recipient=b))] == [m1.message_id]
    assert len(await store.quarantine_list(QuarantineQuery(sender=s.sender, limit=1))) == 1

    detail = await store.quarantine_get(m1.message_id)
    assert detail is not None
    assert detail["symbols"] == [{"name": "GTUBE", "score": 1000.0, "detail": "test string"},
                                 {"name": "A", "score": 1.0, "detail": ""}]
    assert detail["rule"] == "spam" and detail["viruses"] == []
    assert await store.quarantine_raw(m1.message_id) == raw
    assert await store.quarantine_get("01UNKNOWN") is None
    assert await store.quarantine_raw("01UNKNOWN") is None


async def test_quarantine_of_one_message_under_two_rules(store: ReportStore, scenario: Scenario) -> None:
    """Delivery publishes one quarantine event per (kind, rule): none replaces another, even merged."""
    s = scenario
    b, c, d = s.rcpt("bob"), s.rcpt("carol"), s.rcpt("dave")
    raw = s.raw("Offer")
    rx = s.received([b, c, d], raw=raw)
    first = s.quarantine(rx, [b], raw, kind="spam")
    s.events.append((topics.MAIL_QUARANTINE, frames.pack(first.model_copy(update={"recipients": [c], "rule": "bulk"}),
                                                         raw)))
    s.quarantine(rx, [d], raw, kind="policy")
    await s.store_all(store, times=2)
    await store.run("optimize", lambda cl: cl.command(f"OPTIMIZE TABLE {store.database}.quarantine FINAL"))
    item = await store.quarantine_get(rx.message_id)
    assert item is not None
    assert (item["kind"], item["rule"], item["recipients"]) == ("policy,spam", "bulk,spam", sorted([b, c, d]))
    spam_only = await store.quarantine_list(QuarantineQuery(sender=s.sender, kind="spam"))
    assert [(i["kind"], i["recipients"]) for i in spam_only] == [("spam", sorted([b, c]))]
    rows = await store.tracking(TrackingQuery(sender=s.sender))
    assert {r["recipient"]: r["status"] for r in rows} == {b: "quarantined", c: "quarantined", d: "quarantined"}


async def test_quarantine_ttl(store: ReportStore, scenario: Scenario) -> None:
    s = scenario
    rx = s.received([s.rcpt("bob")])
    q = s.quarantine(rx, [s.rcpt("bob")], b"kept")
    now = datetime.now(UTC)
    # Quarantined 8 days ago: past the 7 days of the TTL, dropped (at insert, or hidden until the merge).
    expired = q.model_copy(update={"quarantined_at": now - timedelta(days=8)})
    await store.insert(ingest.quarantined(frames.pack(expired, b"old"), 1024))
    assert await store.quarantine_get(rx.message_id) is None
    assert await store.quarantine_raw(rx.message_id) is None
    assert await store.quarantine_list(QuarantineQuery(sender=s.sender)) == []
    # Quarantined 6 days ago: still there for a day.
    fresh = q.model_copy(update={"message_id": new_message_id(), "quarantined_at": now - timedelta(days=6)})
    await store.insert(ingest.quarantined(frames.pack(fresh, b"fresh"), 1024))
    item = await store.quarantine_get(fresh.message_id)
    assert item is not None and item["expires_at"] == s.iso(fresh.quarantined_at + timedelta(days=7))
    assert await store.quarantine_raw(fresh.message_id) == b"fresh"


async def test_dead_letters(store: ReportStore, scenario: Scenario) -> None:
    topic = topics.dead_letter(topics.MAIL_DELIVERY)
    at_ms = int(scenario.at(1).timestamp() * 1000)
    for offset in (100, 101, 101):  # 101 redelivered
        meta = ingest.RecordMeta(topic=topic, partition=0, offset=offset, key="M", timestamp_ms=at_ms,
                                 headers={"x-mailgw-error": "ValueError: x"} if offset == 100 else {})
        await store.insert(ingest.rows_for(meta, b"junk", 1024))
    counts = await store.dead_letters(scenario.window)
    assert counts == {"total": 2, "topics": {topic: {"records": 2, "with_error": 1}}}


async def test_a_store_that_cannot_open_is_unavailable(store: ReportStore, tmp_path: Path) -> None:
    """Not the message's fault: the handler's record is redelivered, not dead-lettered."""
    assert (await store.ping())[0]
    # chdb serves one data directory per process: a second one cannot open while the first is open.
    other = ReportStore(f"chdb://{tmp_path}/other")
    with pytest.raises(StoreUnavailable, match="cannot open clickhouse") as err:
        await other.insert(ingest.Batch(MESSAGES, [["x"]]))
    assert isinstance(err.value, TransientError)
    await other.close()
    assert (await store.ping())[0]


def test_client_dsn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert client_dsn("chdb://var/clickhouse") == f"chdb://{tmp_path}/var/clickhouse"
    assert (tmp_path / "var" / "clickhouse").is_dir()
    assert client_dsn(f"chdb://{tmp_path}/abs") == f"chdb://{tmp_path}/abs"
    assert client_dsn("chdb://memory") == "chdb://memory"
    assert parse_url("http://default:pw@127.0.0.1:8123") == ("http://default:pw@127.0.0.1:8123", None)
    assert parse_url("https://ch.example:8443/reports?compress=1") == ("https://ch.example:8443?compress=1", "reports")
    assert parse_url("http://default:@clickhouse:8123/mailgw") == ("http://default:@clickhouse:8123", "mailgw")
    assert ReportStore("http://default:@127.0.0.1:9/reports").database == "reports"
    assert ReportStore("http://127.0.0.1:9/", database="other").database == "other"
    for bad in ("clickhouse://x", "var/clickhouse", "chdb://", "http://h:1/a-b", "http://h:1/a/b"):
        with pytest.raises(ValueError):
            client_dsn(bad)
    assert redact("http://default:secret@127.0.0.1:8123/x") == "http://default:***@127.0.0.1:8123/x"
    assert redact("chdb:///data") == "chdb:///data"
    assert os.getcwd() == str(tmp_path)


async def test_schema_grows_and_the_ttl_follows_the_setting(chdb_url: str) -> None:
    db = f"evolve_{new_message_id().lower()[-10:]}"
    old = ReportStore(chdb_url, database=db, quarantine_days=3)
    await old.open()
    # As if the table came from an older version without this column.
    await old.run("drop", lambda c: c.command(f"ALTER TABLE {db}.messages DROP COLUMN rfc_message_id"))
    new = ReportStore(chdb_url, database=db, quarantine_days=5)
    await new.open()

    def inspect(c: Client) -> tuple[str, list[str]]:
        engine = c.query("SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = 'quarantine'",
                         parameters={"d": db}).result_rows[0][0]
        cols = [r[0] for r in c.query("SELECT name FROM system.columns WHERE database = {d:String} "
                                      "AND table = 'messages'", parameters={"d": db}).result_rows]
        return engine, cols

    engine, cols = await new.run("inspect", inspect)
    assert "toIntervalDay(5)" in engine and "rfc_message_id" in cols
    await old.close()
    await new.close()
