"""The HTTP API over the real store (chdb), through httpx's ASGI transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette

from mailgw_libs.events import DeliveryStatus, Fate
from mailgw_reporting import api
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


async def test_summary_shape(http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    rx = s.received([s.rcpt("bob")])
    s.action(rx, {s.rcpt("bob"): Fate.ACCEPT})
    s.delivery(rx.message_id, s.rcpt("bob"), DeliveryStatus.DELIVERED)
    await s.store_all(store)
    r = await http.get("/api/v1/stats/summary", params={"since": s.iso(s.base), "until": s.iso(s.at(3600))})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "received": 1, "delivered": 1, "spam": 0, "virus": 0, "quarantined": 0, "blocked": 0, "rejected": 0,
        "deferred": 0, "bounced": 0,
        "recipients": {"received": 1, "delivered": 1, "spam": 0, "virus": 0, "quarantined": 0, "blocked": 0,
                       "rejected": 0, "deferred": 0, "bounced": 0},
    }
    # An offset written with '+' unencoded in the URL arrives as a space: still understood.
    since = s.base.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00"
    r = await http.get(f"/api/v1/stats/summary?since={since}&until={s.at(3600).date().isoformat()}T23:00:00")
    assert r.status_code == 200 and r.json()["received"] == 1
    # All time (no window) answers too.
    assert (await http.get("/api/v1/stats/summary")).json()["received"] >= 1


async def test_tracking_and_limit(http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    for i in range(3):
        s.received([s.rcpt("bob"), s.rcpt("carol")], t=i)
    s.refusal(rcpt=s.rcpt("bob"))
    await s.store_all(store, times=2)
    r = await http.get("/api/v1/tracking", params={"sender": s.sender})
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 7 and body["limit"] == 100 and len(body["rows"]) == 7
    assert set(body["rows"][0]) == {
        "message_id", "received_at", "sender", "recipient", "subject", "client_ip", "direction", "status",
        "status_at", "score", "rule", "symbols", "viruses", "last_response", "reason"}
    r = await http.get("/api/v1/tracking", params={"sender": s.sender, "recipient": s.rcpt("carol"), "limit": "2"})
    assert [i["recipient"] for i in r.json()["rows"]] == [s.rcpt("carol")] * 2


@pytest.mark.parametrize(("path", "detail"), [
    ("/api/v1/stats/summary?since=yesterday", "since must be an ISO 8601"),
    ("/api/v1/stats/summary?until=2024-13-01", "until must be an ISO 8601"),
    ("/api/v1/stats/summary?since=2024-02-01&until=2024-01-01", "since must be before until"),
    ("/api/v1/stats/summary?since=0001-01-01", "between 1970 and 2199"),
    ("/api/v1/stats/summary?sicne=2024-01-01", "unknown parameter 'sicne'"),
    ("/api/v1/stats/dead-letters?since=x", "since must be an ISO 8601"),
    ("/api/v1/tracking?limit=0", "limit must be from 1 to 1000"),
    ("/api/v1/tracking?limit=1001", "limit must be from 1 to 1000"),
    ("/api/v1/tracking?limit=ten", "limit must be an integer"),
    ("/api/v1/tracking?limit=1&limit=2", "given 2 times"),
    ("/api/v1/tracking?sender=not-an-address", "sender must be an address"),
    ("/api/v1/tracking?recipient=a%20b@example.com", "recipient must be an address"),
    ("/api/v1/tracking?kind=spam", "unknown parameter 'kind'"),
    ("/api/v1/quarantine?kind=sp%27am", "kind must be a word"),
    ("/api/v1/quarantine?limit=-5", "limit must be from 1 to 1000"),
    ("/api/v1/quarantine/bad%20id", "invalid message id"),
    ("/api/v1/quarantine/01ABC?x=1", "unknown parameter 'x'"),
])
async def test_bad_parameters(http: httpx.AsyncClient, path: str, detail: str) -> None:
    r = await http.get(path)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_request" and detail in body["detail"]


async def test_empty_parameters_are_ignored(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v1/tracking?sender=&recipient=&since=&limit=1")
    assert r.status_code == 200 and r.json()["limit"] == 1


async def test_quarantine_endpoints(http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    raw = s.raw("Prize", "GTUBE") + b"\r\n\x00\xff\xfe binary tail\r\n"
    rx = s.received([s.rcpt("bob")], raw=raw)
    s.quarantine(rx, [s.rcpt("bob")], raw, kind="spam", score=1000)
    await s.store_all(store, times=2)

    r = await http.get("/api/v1/quarantine", params={"sender": s.sender, "kind": "spam"})
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["id"] for i in items] == [rx.message_id]
    assert set(items[0]) == {"id", "kind", "sender", "recipients", "subject", "score", "received_at",
                             "quarantined_at", "expires_at", "size", "state", "released_at", "released_to",
                             "deleted_at", "dismissed_by"}
    assert items[0]["state"] == "quarantined"
    assert (await http.get("/api/v1/quarantine", params={"sender": s.sender, "kind": "virus"})).json()["items"] == []

    r = await http.get(f"/api/v1/quarantine/{rx.message_id}")
    assert r.status_code == 200
    assert r.json()["id"] == rx.message_id and "symbols" in r.json() and r.json()["recipients"] == [s.rcpt("bob")]

    r = await http.get(f"/api/v1/quarantine/{rx.message_id}/raw")
    assert r.status_code == 200
    assert r.content == raw
    assert r.headers["content-type"] == "message/rfc822"
    assert r.headers["content-disposition"] == f'attachment; filename="{rx.message_id}.eml"'


async def test_unknown_quarantine_id(http: httpx.AsyncClient) -> None:
    for path in ("/api/v1/quarantine/01UNKNOWNUNKNOWNUNKNOWN000", "/api/v1/quarantine/01UNKNOWNUNKNOWNUNKNOWN000/raw"):
        r = await http.get(path)
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "detail": "no quarantined message 01UNKNOWNUNKNOWNUNKNOWN000"}


async def test_store_unavailable_is_503() -> None:
    # A server that is not there (nothing listens on port 9 of 127.0.0.1): 503, not 500.
    down = ReportStore("http://127.0.0.1:9")
    app = Starlette(routes=api.routes(down))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
        r = await client.get("/api/v1/stats/summary")
    await down.close()
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
