"""Quarantine release and delete: the API over the real store (chdb), with a recording publisher,
and once through the running service on its own Tansu broker (the action frame read back from Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError
from starlette.applications import Starlette

from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, Fate, MailAction, SymbolHit
from mailgw_reporting import api
from mailgw_reporting.app import build
from mailgw_reporting.settings import ReportingSettings
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


@dataclass
class Recorder:
    records: list[tuple[str, str, bytes]] = field(default_factory=list)
    fail: bool = False

    async def publish(self, body: bytes, topic: str, key: str) -> None:
        if self.fail:
            raise KafkaTimeoutError("no acknowledgement (test)")
        self.records.append((topic, key, body))

    def actions(self) -> list[tuple[MailAction, bytes]]:
        out = []
        for topic, key, body in self.records:
            assert topic == topics.MAIL_ACTIONS
            action, raw = frames.unpack(body, MailAction)
            assert key == action.message_id
            out.append((action, raw))
        return out


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def http(store: ReportStore, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=api.routes(store, recorder.publish))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as client:
        yield client


async def quarantined(s: Scenario, store: ReportStore, recipients: list[str]) -> tuple[str, bytes]:
    raw = s.raw("Prize", "GTUBE") + b"\r\n\x00\xff binary tail\r\n"
    rx = s.received(recipients, raw=raw)
    s.action(rx, dict.fromkeys(recipients, Fate.QUARANTINE), spam=True, score=1000)
    s.quarantine(rx, recipients, raw, score=1000, symbols=[SymbolHit(name="GTUBE", score=1000)])
    await s.store_all(store)
    return rx.message_id, raw


async def test_release_publishes_the_original_for_the_original_recipients(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, recorder: Recorder) -> None:
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    mid, raw = await quarantined(s, store, [bob, carol])
    r = await http.post(f"/api/v1/quarantine/{mid}/release")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "released" and body["recipients"] == sorted([bob, carol])

    [(action, sent)] = recorder.actions()
    assert sent == raw
    assert action.message_id == mid and action.mail_from == s.sender and action.release_id == body["release_id"]
    assert action.direction is Direction.INBOUND and action.client_ip == "192.0.2.10"
    assert [(d.recipient, d.fate, d.rule, d.spam) for d in action.decisions] == [
        (r, Fate.ACCEPT, "released", True) for r in sorted([bob, carol])]
    assert action.score == 1000 and [h.name for h in action.symbols] == ["GTUBE"]

    item = (await http.get(f"/api/v1/quarantine/{mid}")).json()
    assert item["state"] == "released" and item["released_to"] == sorted([bob, carol]) and item["released_at"]
    listed = (await http.get("/api/v1/quarantine", params={"sender": s.sender})).json()["items"]
    assert [(i["id"], i["state"]) for i in listed] == [(mid, "released")]
    assert (await http.get("/api/v1/quarantine", params={"sender": s.sender, "state": "quarantined"})
            ).json()["items"] == []

    # A second release: 409, unless forced.
    r = await http.post(f"/api/v1/quarantine/{mid}/release")
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    r = await http.post(f"/api/v1/quarantine/{mid}/release", content=json.dumps({"recipients": [bob]}))
    assert r.status_code == 409
    r = await http.post(f"/api/v1/quarantine/{mid}/release?force=true", content=json.dumps({"recipients": [bob]}))
    assert r.status_code == 202 and r.json()["recipients"] == [bob]
    second, _ = recorder.actions()[1]
    assert [d.recipient for d in second.decisions] == [bob]
    assert second.release_id not in ("", action.release_id)


async def test_release_of_some_recipients_then_the_rest(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, recorder: Recorder) -> None:
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    mid, _ = await quarantined(s, store, [bob, carol])
    r = await http.post(f"/api/v1/quarantine/{mid}/release", json={"recipients": [carol.upper()]})
    assert r.status_code == 202 and r.json()["recipients"] == [carol]
    r = await http.post(f"/api/v1/quarantine/{mid}/release")  # the ones not released yet
    assert r.status_code == 202 and r.json()["recipients"] == [bob]
    assert (await http.post(f"/api/v1/quarantine/{mid}/release")).status_code == 409
    assert [[d.recipient for d in a.decisions] for a, _ in recorder.actions()] == [[carol], [bob]]


@pytest.mark.parametrize(("body", "detail"), [
    ({"recipients": ["mallory@elsewhere.example"]}, "not a recipient of"),
    ({"recipients": []}, "non-empty list"),
    ({"recipients": "bob"}, "non-empty list"),
    ({"to": ["bob"]}, "unknown field"),
    ("not json", "must be JSON"),
])
async def test_release_to_other_recipients_is_refused(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, recorder: Recorder,
        body: Any, detail: str) -> None:
    mid, _ = await quarantined(scenario, store, [scenario.rcpt("bob")])
    content = body if isinstance(body, str) else json.dumps(body)
    r = await http.post(f"/api/v1/quarantine/{mid}/release", content=content)
    assert r.status_code == 400 and detail in r.json()["detail"], r.text
    assert recorder.records == []
    assert (await http.get(f"/api/v1/quarantine/{mid}")).json()["state"] == "quarantined"


async def test_unknown_ids_are_404(http: httpx.AsyncClient, recorder: Recorder) -> None:
    unknown = "01UNKNOWNUNKNOWNUNKNOWN000"
    for method, path in (("POST", f"/api/v1/quarantine/{unknown}/release"), ("DELETE", f"/api/v1/quarantine/{unknown}")):
        r = await http.request(method, path)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert (await http.post("/api/v1/quarantine/bad%20id/release")).status_code == 400
    assert (await http.post(f"/api/v1/quarantine/{unknown}/release?force=maybe")).status_code == 400
    assert recorder.records == []


async def test_delete_hides_the_item(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, recorder: Recorder) -> None:
    s = scenario
    mid, _ = await quarantined(s, store, [s.rcpt("bob")])
    r = await http.delete(f"/api/v1/quarantine/{mid}")
    assert r.status_code == 200 and r.json()["state"] == "deleted"
    for path in (f"/api/v1/quarantine/{mid}", f"/api/v1/quarantine/{mid}/raw"):
        assert (await http.get(path)).status_code == 404
    assert (await http.get("/api/v1/quarantine", params={"sender": s.sender})).json()["items"] == []
    deleted = (await http.get("/api/v1/quarantine", params={"sender": s.sender, "state": "deleted"})).json()["items"]
    assert [(i["id"], i["state"]) for i in deleted] == [(mid, "deleted")] and deleted[0]["deleted_at"]
    assert (await http.delete(f"/api/v1/quarantine/{mid}")).status_code == 404
    assert (await http.post(f"/api/v1/quarantine/{mid}/release")).status_code == 404
    assert recorder.records == []


async def test_release_not_recorded_when_the_bus_fails(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore, recorder: Recorder) -> None:
    s = scenario
    mid, _ = await quarantined(s, store, [s.rcpt("bob")])
    recorder.fail = True
    r = await http.post(f"/api/v1/quarantine/{mid}/release")
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    assert (await http.get(f"/api/v1/quarantine/{mid}")).json()["state"] == "quarantined"
    recorder.fail = False
    assert (await http.post(f"/api/v1/quarantine/{mid}/release")).status_code == 202


async def test_release_through_the_service_reaches_kafka(fresh_kafka: str, chdb_url: str, scenario: Scenario) -> None:
    s = scenario
    bob = s.rcpt("bob")
    raw = s.raw("Win", "GTUBE") + b"\x00\xff"
    rx = s.received([bob], raw=raw)
    s.action(rx, {bob: Fate.QUARANTINE}, spam=True, score=1000)
    s.quarantine(rx, [bob], raw, score=1000)
    runtime = build(ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0))
    async with running(runtime):
        for topic, data in s.events:
            await produce(fresh_kafka, topic, rx.message_id, data)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app()),
                                     base_url="http://reporting") as http:
            for _ in range(300):
                if (await http.get(f"/api/v1/quarantine/{rx.message_id}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            r = await http.post(f"/api/v1/quarantine/{rx.message_id}/release")
            assert r.status_code == 202, r.text
            records = await collect(fresh_kafka, topics.MAIL_ACTIONS, 2, key=rx.message_id)
            assert len(records) == 2  # the original decision, then the release
            assert records[-1].value is not None
            action, sent = frames.unpack(records[-1].value, MailAction)
            assert sent == raw and action.release_id == r.json()["release_id"]
            assert [(d.recipient, d.fate, d.rule) for d in action.decisions] == [(bob, Fate.ACCEPT, "released")]
            assert (await http.post(f"/api/v1/quarantine/{rx.message_id}/release")).status_code == 409
