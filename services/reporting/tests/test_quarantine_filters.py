"""Quarantine list filters and paging, on the real store (chdb), through the API."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import pytest

from mailgw_libs.events import new_message_id
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


async def test_filters_and_paging(http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    other_domain = f"dave@other-{s.tag}.example"
    ids: dict[str, str] = {}
    for n, (name, rcpts, subject, score) in enumerate([
        ("a", [bob], "Cheap Watches", 5.0), ("b", [bob, carol], "Your invoice", 12.0),
        ("c", [carol], "cheap pills", 30.5), ("d", [other_domain], "Hello", 7.0), ("e", [bob], "ÜBER offer", 9.0),
    ]):
        rx = s.received(rcpts, subject=subject, t=10 * n)
        s.quarantine(rx, rcpts, s.raw(subject), t=10 * n + 1, score=score)
        ids[name] = rx.message_id
    await s.store_all(store, times=2)  # redelivered: still one item per message

    async def listed(**params: str) -> list[str]:
        r = await http.get("/api/v1/quarantine", params={"sender": s.sender, **params})
        assert r.status_code == 200, r.text
        names = {v: k for k, v in ids.items()}
        return [names[i["id"]] for i in r.json()["items"]]

    assert await listed() == ["e", "d", "c", "b", "a"]
    assert await listed(recipient=bob) == ["e", "b", "a"]  # per user
    assert await listed(recipient=bob.upper()) == ["e", "b", "a"]
    assert await listed(recipient=f"@{s.tag}.example") == ["e", "c", "b", "a"]  # per domain
    assert await listed(subject="cheap") == ["c", "a"]  # case-insensitive substring
    assert await listed(subject="über") == ["e"]
    assert await listed(min_score="9", max_score="12") == ["e", "b"]
    assert await listed(min_score="30.5") == ["c"]
    assert await listed(since=s.iso(s.at(10)), until=s.iso(s.at(30))) == ["c", "b"]  # received in [since, until)
    assert await listed(recipient=bob, subject="o", min_score="6") == ["e", "b"]

    # Paging: newest first, `next_offset` until the last page.
    page1 = (await http.get("/api/v1/quarantine", params={"sender": s.sender, "limit": "2"})).json()
    page2 = (await http.get("/api/v1/quarantine", params={"sender": s.sender, "limit": "2", "offset": "2"})).json()
    page3 = (await http.get("/api/v1/quarantine", params={"sender": s.sender, "limit": "2", "offset": "4"})).json()
    assert [i["id"] for i in page1["items"] + page2["items"] + page3["items"]] == [
        ids[k] for k in ("e", "d", "c", "b", "a")]
    assert (page1["next_offset"], page2["next_offset"], page3["next_offset"]) == (2, 4, None)


@pytest.mark.parametrize(("params", "detail"), [
    ({"min_score": "lots"}, "min_score must be a number"),
    ({"max_score": "nan"}, "finite"),
    ({"min_score": "inf"}, "finite"),
    ({"min_score": "5", "max_score": "1"}, "min_score must not be above max_score"),
    ({"offset": "-1"}, "offset must be"),
    ({"offset": "99999999999"}, "offset must be"),
    ({"subject": "x" * 501}, "subject must be"),
    ({"subject": "a\x00b"}, "subject must be"),
    ({"since": "yesterday"}, "since must be"),
    ({"since": "2024-05-02", "until": "2024-05-01"}, "since must be before until"),
    ({"recipient": "no-at-sign"}, "recipient must be"),
    ({"recipient": "@" + "x" * 400}, "recipient must be"),
    ({"score": "5"}, "unknown parameter"),
])
async def test_bad_filters_are_400(http: httpx.AsyncClient, params: dict[str, str], detail: str) -> None:
    r = await http.get("/api/v1/quarantine", params=params)
    assert r.status_code == 400 and detail in r.json()["detail"], r.text


async def test_hostile_filter_values_are_only_data(http: httpx.AsyncClient, scenario: Scenario,
                                                   store: ReportStore) -> None:
    s = scenario
    rx = s.received([s.rcpt("bob")], subject="x' OR 1=1 --")
    s.quarantine(rx, [s.rcpt("bob")], s.raw("x"))
    await s.store_all(store)
    for subject in ("' OR 1=1 --", "{p0:String}", "%", "_", "\\"):
        r = await http.get("/api/v1/quarantine", params={"subject": subject, "sender": s.sender})
        assert r.status_code == 200
        assert [i["id"] for i in r.json()["items"]] == ([rx.message_id] if subject == "' OR 1=1 --" else [])
    r = await http.get("/api/v1/quarantine", params={"subject": "x", "since": s.iso(s.at(0) + timedelta(days=1)),
                                                     "recipient": f"{new_message_id()}@example.com"})
    assert r.json()["items"] == []
