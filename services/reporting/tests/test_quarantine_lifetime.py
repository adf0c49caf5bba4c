"""Quarantine lifetimes per kind and the expiry task, on the real store (chdb) with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from mailgw_libs.events import new_message_id
from mailgw_reporting.expiry import run_expiry
from mailgw_reporting.queries import QuarantineQuery
from mailgw_reporting.schema import Lifetimes
from mailgw_reporting.settings import ReportingSettings
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def own_store(chdb_url: str, scenario: Scenario) -> AsyncIterator[tuple[ReportStore, Clock]]:
    clock = Clock(scenario.base)
    lifetimes = Lifetimes.of(7, {"spam": 2, "virus": 5, "attachment": 3})
    store = ReportStore(chdb_url, database=f"life_{new_message_id().lower()[-10:]}", lifetimes=lifetimes,
                        clock=clock)
    yield store, clock
    await store.close()


async def test_each_kind_expires_after_its_lifetime(own_store: tuple[ReportStore, Clock], scenario: Scenario) -> None:
    store, clock = own_store
    s = scenario
    ids = {}
    for kind in ("spam", "virus", "attachment", "policy"):
        rx = s.received([s.rcpt("bob")])
        s.quarantine(rx, [s.rcpt("bob")], s.raw(kind), kind=kind, t=0)
        ids[kind] = rx.message_id
    await s.store_all(store)

    async def listed() -> set[str]:
        return {i["kind"] for i in await store.quarantine_list(QuarantineQuery(sender=s.sender))}

    item = await store.quarantine_get(ids["virus"])
    assert item is not None and item["expires_at"] == s.iso(s.at(0) + timedelta(days=5))
    clock.now = s.at(0) + timedelta(days=1)
    assert await listed() == {"spam", "virus", "attachment", "policy"}
    assert await store.expire_quarantine() == 0

    clock.now = s.at(0) + timedelta(days=2, seconds=1)
    assert await listed() == {"virus", "attachment", "policy"}  # hidden before the expiry task runs
    assert await store.quarantine_raw(ids["spam"]) is None
    assert await store.expire_quarantine() == 1
    left = await store.run("rows", lambda c: sorted(r[0] for r in c.query(
        f"SELECT kind FROM {store.database}.quarantine").result_rows))
    assert left == ["attachment", "policy", "virus"]  # the spam row and its bytes are gone

    clock.now = s.at(0) + timedelta(days=6)
    assert await store.expire_quarantine() == 2
    assert await listed() == {"policy"}
    assert await store.quarantine_raw(ids["policy"]) is not None
    clock.now = s.at(0) + timedelta(days=8)
    assert await store.expire_quarantine() == 1
    assert await listed() == set()


async def test_the_periodic_task_expires_with_the_clock(own_store: tuple[ReportStore, Clock],
                                                        scenario: Scenario) -> None:
    store, clock = own_store
    s = scenario
    rx = s.received([s.rcpt("bob")])
    s.quarantine(rx, [s.rcpt("bob")], s.raw("x"), kind="spam", t=0)
    await s.store_all(store)
    clock.now = s.at(0) + timedelta(days=3)
    runs = await run_expiry(store, interval_s=0.01, rounds=2)
    assert runs == [1, 0]
    clock.now = s.at(0)
    assert await store.quarantine_get(rx.message_id) is None  # deleted, not merely hidden


async def test_the_ttl_follows_the_lifetimes_and_is_not_rewritten(chdb_url: str) -> None:
    db = f"ttl_{new_message_id().lower()[-10:]}"
    lifetimes = Lifetimes.of(7, {"virus": 30, "spam": 7})
    first = ReportStore(chdb_url, database=db, lifetimes=lifetimes)
    await first.open()
    engine = await first.run("engine", lambda c: c.query(
        "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = 'quarantine'",
        parameters={"d": db}).result_rows[0][0])
    assert lifetimes.expires_sql(ttl=True) in engine
    await first.close()


def test_lifetimes_from_settings() -> None:
    settings = ReportingSettings(quarantine_days=7, quarantine_virus_days=30)
    assert settings.lifetimes.days("virus") == 30 and settings.lifetimes.days("spam") == 7
    assert settings.lifetimes.days_sql() == "multiIf(kind = 'virus', 30, 7)"
    assert ReportingSettings().lifetimes.days_sql() == "7"
    with pytest.raises(ValueError):
        ReportingSettings(quarantine_attachment_days=0)
    with pytest.raises(ValueError):
        Lifetimes.of(7, {"x' OR 1=1 --": 3})
