"""The service in process: a broker of its own (Tansu), the session's chdb directory, the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import topics
from mailgw_libs.events import DeliveryStatus, Fate, SymbolHit
from mailgw_reporting.app import build
from mailgw_reporting.settings import ReportingSettings

if TYPE_CHECKING:
    from conftest import Scenario


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Poll `check` until it returns something truthy (AssertionError means: not yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_events_to_api(fresh_kafka: str, chdb_url: str, scenario: Scenario) -> None:
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    # One message through the whole pipeline, twice delivered for bob (a deferral first).
    rx = s.received([bob, carol], subject="Invoice")
    s.verdict(rx.message_id, "antispam", [SymbolHit(name="MISSING_DATE", score=1.0)])
    s.verdict(rx.message_id, "antivirus", [])
    s.action(rx, {bob: Fate.ACCEPT, carol: Fate.ACCEPT}, score=1.0, symbols=[SymbolHit(name="MISSING_DATE", score=1)])
    s.delivery(rx.message_id, bob, DeliveryStatus.DEFERRED, t=3, code=451, response="4.7.1 try later")
    s.delivery(rx.message_id, bob, DeliveryStatus.DELIVERED, t=8, attempt=2)
    s.delivery(rx.message_id, carol, DeliveryStatus.DELIVERED, t=3)
    # One quarantined as spam.
    raw = s.raw("Win", "GTUBE") + b"\x00\xff"
    spam = s.received([carol], t=10, raw=raw)
    s.action(spam, {carol: Fate.QUARANTINE}, spam=True, score=1000, t=11)
    s.quarantine(spam, [carol], raw, t=12, score=1000)
    s.refusal(rcpt=s.rcpt("nobody"))

    settings = ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0)
    runtime = build(settings)
    async with running(runtime):
        app = runtime.app()
        # Garbage first: it goes to the dead-letter topic and the rest is processed all the same.
        await produce(fresh_kafka, topics.MAIL_VERDICTS, "junk", b"\x00 not a verdict")
        for topic, data in s.events:
            key = "smtp" if topic == topics.SMTP_EVENTS else rx.message_id if data.find(
                rx.message_id.encode()) >= 0 else spam.message_id
            await produce(fresh_kafka, topic, key, data)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as http:
            window = {"since": s.iso(s.base), "until": s.iso(s.at(3600))}

            async def summary() -> dict[str, Any]:
                body: dict[str, Any] = (await http.get("/api/v1/stats/summary", params=window)).json()
                assert (body["received"], body["delivered"], body["quarantined"], body["spam"], body["rejected"]) \
                    == (2, 1, 1, 1, 1), body
                return body

            body = await eventually(summary)
            assert body["recipients"]["delivered"] == 2 and body["deferred"] == 0

            async def tracking() -> list[dict[str, Any]]:
                r = await http.get("/api/v1/tracking", params={"sender": s.sender, **window})
                items: list[dict[str, Any]] = r.json()["rows"]
                assert [(i["message_id"], i["recipient"], i["status"]) for i in items] == [
                    (spam.message_id, carol, "quarantined"),
                    (None, s.rcpt("nobody"), "rejected"),
                    (rx.message_id, bob, "delivered"),
                    (rx.message_id, carol, "delivered"),
                ], items
                return items

            items = await eventually(tracking)
            assert items[2]["last_response"]["attempt"] == 2 and items[2]["symbols"][0]["name"] == "MISSING_DATE"

            r = await http.get(f"/api/v1/quarantine/{spam.message_id}/raw")
            assert r.status_code == 200 and r.content == raw

            # The garbage is on mail.verdicts.dlq with the error, and was counted from there.
            dead = await collect(fresh_kafka, topics.dead_letter(topics.MAIL_VERDICTS), 1)
            assert dead[0].value == b"\x00 not a verdict"
            assert "x-mailgw-error" in dict(dead[0].headers)

            async def dead_letters() -> dict[str, Any]:
                counts: dict[str, Any] = (await http.get("/api/v1/stats/dead-letters")).json()
                assert counts["topics"].get("mail.verdicts.dlq", {}).get("with_error", 0) >= 1, counts
                return counts

            await eventually(dead_letters)
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["clickhouse"]["ok"] is True
