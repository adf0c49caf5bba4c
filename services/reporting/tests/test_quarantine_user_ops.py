"""Welcomelist/blocklist the sender for a user (real Redis) and learn as spam/ham (real Kafka, mail.learn)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette

from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import Fate, LearnRequest
from mailgw_libs.failfast import make_redis
from mailgw_libs.userlists import UserListStore
from mailgw_reporting import api
from mailgw_reporting.app import assemble
from mailgw_reporting.settings import ReportingSettings
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


@pytest.fixture
async def userlists(redis_url: str, unique: str) -> AsyncIterator[UserListStore]:
    redis = make_redis(redis_url, 5.0)
    yield UserListStore(redis, f"test:{unique}:userlists")
    await redis.aclose()


@pytest.fixture
async def http(store: ReportStore, userlists: UserListStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=api.routes(store, None, userlists))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as client:
        yield client


async def quarantined(s: Scenario, store: ReportStore, recipients: list[str]) -> tuple[str, bytes]:
    raw = s.raw("Offer", "buy now")
    rx = s.received(recipients, raw=raw)
    s.action(rx, dict.fromkeys(recipients, Fate.QUARANTINE), spam=True, score=9)
    s.quarantine(rx, recipients, raw, score=9)
    await s.store_all(store)
    return rx.message_id, raw


async def test_welcomelist_and_blocklist_the_sender_for_a_user(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, userlists: UserListStore) -> None:
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    mid, _ = await quarantined(s, store, [bob, carol])
    assert await userlists.match(bob, s.sender) is None

    r = await http.post(f"/api/v1/quarantine/{mid}/welcomelist", json={"recipients": [bob.upper()]})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": mid, "list": "welcome", "entries": {bob: s.sender}}
    assert await userlists.list(bob, "welcome") == [s.sender]
    assert await userlists.match(bob, s.sender) == "welcome"
    assert await userlists.match(carol, s.sender) is None  # only for that user

    r = await http.post(f"/api/v1/quarantine/{mid}/blocklist")  # no body: every recipient of the message
    assert r.status_code == 200 and set(r.json()["entries"]) == {bob, carol}
    assert await userlists.match(carol, s.sender) == "block"
    assert await userlists.match(bob, s.sender) == "welcome"  # the user's welcomelist wins over the blocklist


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"recipients": ["mallory@elsewhere.example"]}, 400, "not a recipient"),
    ({"recipients": []}, 400, "non-empty list"),
    ({"recipients": ["x" * 400]}, 400, "non-empty list"),
    ({"recipients": [1]}, 400, "non-empty list"),
    ({"pattern": "*@*"}, 400, "unknown field"),
    ("[1, 2", 400, "must be JSON"),
    ("x" * 70_000, 400, "too large"),
])
async def test_listing_refuses_bad_requests(http: httpx.AsyncClient, scenario: Scenario, store: ReportStore,
                                            userlists: UserListStore, body: object, status: int,
                                            detail: str) -> None:
    mid, _ = await quarantined(scenario, store, [scenario.rcpt("bob")])
    content = body if isinstance(body, str) else json.dumps(body)
    r = await http.post(f"/api/v1/quarantine/{mid}/welcomelist", content=content)
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert await userlists.list(scenario.rcpt("bob"), "welcome") == []


async def test_listing_an_unknown_message_or_without_redis(
        scenario: Scenario, store: ReportStore, userlists: UserListStore) -> None:
    mid, _ = await quarantined(scenario, store, [scenario.rcpt("bob")])
    down = UserListStore(make_redis("redis://127.0.0.1:9/0", 0.5))
    for lists, path, status in ((userlists, "/api/v1/quarantine/01UNKNOWNUNKNOWN/welcomelist", 404),
                                (down, f"/api/v1/quarantine/{mid}/welcomelist", 503),
                                (None, f"/api/v1/quarantine/{mid}/blocklist", 503)):
        app = Starlette(routes=api.routes(store, None, lists))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
            assert (await client.post(path)).status_code == status


async def test_learn_through_the_service_reaches_mail_learn(
        fresh_kafka: str, chdb_url: str, redis_url: str, scenario: Scenario) -> None:
    s = scenario
    bob = s.rcpt("bob")
    raw = s.raw("Learn me", "cheap cheap") + b"\x00\xff"
    rx = s.received([bob], raw=raw)
    s.quarantine(rx, [bob], raw, score=9)
    service = assemble(ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0,
                                         redis_url=redis_url), background=False)
    async with running(service.runtime):
        for topic, data in s.events:
            await produce(fresh_kafka, topic, rx.message_id, data)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.runtime.app()),
                                     base_url="http://reporting") as http:
            for _ in range(300):
                if (await http.get(f"/api/v1/quarantine/{rx.message_id}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            r = await http.post(f"/api/v1/quarantine/{rx.message_id}/learn", json={"label": "ham", "recipient": bob})
            assert r.status_code == 202, r.text
            r = await http.post(f"/api/v1/quarantine/{rx.message_id}/learn", json={"label": "spam"})
            assert r.status_code == 202, r.text
            for bad in ({"label": "maybe"}, {}, {"label": "spam", "recipient": "mallory@x.example"},
                        {"label": "spam", "extra": 1}):
                assert (await http.post(f"/api/v1/quarantine/{rx.message_id}/learn", json=bad)).status_code == 400
            assert (await http.post("/api/v1/quarantine/01UNKNOWNUNKNOWN/learn",
                                    json={"label": "spam"})).status_code == 404
            records = await collect(fresh_kafka, topics.MAIL_LEARN, 2, key=rx.message_id)
    learned = [frames.unpack(r.value or b"", LearnRequest) for r in records]
    assert [(q.label, q.source, q.recipient, q.message_id) for q, _ in learned] == [
        ("ham", "quarantine", bob, rx.message_id), ("spam", "quarantine", "", rx.message_id)]
    assert all(sent == raw for _, sent in learned)
