"""A quarantined message survives a broker restart: its bytes and index live in the report store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mailgw_devstack.infra import start_tansu
from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import MailAction
from mailgw_reporting.app import build
from mailgw_reporting.settings import ReportingSettings

if TYPE_CHECKING:
    from conftest import Scenario


async def test_quarantine_survives_a_broker_restart(tmp_path: Path, chdb_url: str, scenario: Scenario) -> None:
    s = scenario
    bob = s.rcpt("bob")
    raw = s.raw("Keep me", "attachment quarantine") + b"\x00\xff"
    rx = s.received([bob], raw=raw)
    s.quarantine(rx, [bob], raw, kind="attachment", score=0)

    # Tansu here keeps its log in memory: stopping it loses every topic.
    first = start_tansu(tmp_path / "kafka1")
    try:
        runtime = build(ReportingSettings(kafka_bootstrap=f"127.0.0.1:{first.port}", clickhouse_url=chdb_url,
                                          http_port=0))
        async with running(runtime):
            for topic, data in s.events:
                await produce(f"127.0.0.1:{first.port}", topic, rx.message_id, data)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app()), base_url="http://r") as h:
                for _ in range(300):
                    if (await h.get(f"/api/v1/quarantine/{rx.message_id}")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
    finally:
        first.stop()

    second = start_tansu(tmp_path / "kafka2")
    try:
        bootstrap = f"127.0.0.1:{second.port}"
        runtime = build(ReportingSettings(kafka_bootstrap=bootstrap, clickhouse_url=chdb_url, http_port=0))
        async with running(runtime):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.app()), base_url="http://r") as h:
                item = (await h.get(f"/api/v1/quarantine/{rx.message_id}")).json()
                assert item["kind"] == "attachment" and item["recipients"] == [bob]
                assert (await h.get(f"/api/v1/quarantine/{rx.message_id}/raw")).content == raw
                assert (await h.post(f"/api/v1/quarantine/{rx.message_id}/release")).status_code == 202
            [record] = await collect(bootstrap, topics.MAIL_ACTIONS, 1, key=rx.message_id)
            assert frames.unpack(record.value or b"", MailAction)[1] == raw
    finally:
        second.stop()
