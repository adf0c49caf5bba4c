"""`mailgw quarantine ...` against the real API (uvicorn on a free port, the store on chdb, Redis)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn
from starlette.applications import Starlette

from mailgw_libs import cli, frames, topics
from mailgw_libs.events import LearnRequest, MailAction
from mailgw_libs.failfast import make_redis
from mailgw_libs.userlists import UserListStore
from mailgw_reporting import api
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Published(list[tuple[str, str, bytes]]):
    async def publish(self, body: bytes, topic: str, key: str) -> None:
        self.append((topic, key, body))


@pytest.fixture
async def served(store: ReportStore, redis_url: str, unique: str
                 ) -> AsyncIterator[tuple[str, Published, UserListStore]]:
    published = Published()
    redis = make_redis(redis_url, 5.0)
    userlists = UserListStore(redis, f"test:{unique}:userlists")
    port = free_port()
    app = Starlette(routes=api.routes(store, published.publish, userlists))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # startup of uvicorn has no event to wait on
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}", published, userlists
    server.should_exit = True
    await task
    await redis.aclose()


async def mailgw(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    await asyncio.to_thread(cli.main, list(argv))
    return capsys.readouterr().out


async def test_quarantine_commands(served: tuple[str, Published, UserListStore], scenario: Scenario,
                                   store: ReportStore, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url, published, userlists = served
    s = scenario
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    ids = []
    for n, subject in enumerate(("Cheap one", "Cheap two", "Other")):
        raw = s.raw(subject, f"body {n}")
        rx = s.received([bob, carol] if n == 0 else [bob], raw=raw, subject=subject, t=n)
        s.quarantine(rx, [bob, carol] if n == 0 else [bob], raw, score=5.0 + n, t=n + 1)
        ids.append(rx.message_id)
    await s.store_all(store)

    out = await mailgw(capsys, "--api", url, "quarantine", "list", "--json", "--sender", s.sender)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["recipient"]) for r in rows] == [(ids[2], bob), (ids[1], bob), (ids[0], bob),
                                                         (ids[0], carol)]
    assert set(rows[0]) >= {"id", "kind", "sender", "recipient", "subject", "score", "received"}
    out = await mailgw(capsys, "--api", url, "quarantine", "list", "--json", "--sender", s.sender,
                       "--subject", "cheap", "--min-score", "5.5", "--recipient", bob)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [ids[1]]
    out = await mailgw(capsys, "--api", url, "quarantine", "list", "--json", "--sender", s.sender, "--limit", "1",
                       "--all")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [ids[2], ids[1], ids[0], ids[0]]

    out = await mailgw(capsys, "--api", url, "quarantine", "view", ids[0])
    assert "Subject: Cheap one" in out and "body 0" in out
    target = tmp_path / "m.eml"
    await mailgw(capsys, "--api", url, "quarantine", "download", ids[0], "-o", str(target))
    assert target.read_bytes() == await store.quarantine_raw(ids[0])

    out = await mailgw(capsys, "--api", url, "quarantine", "welcomelist", ids[0], "--recipient", carol)
    assert out.strip() == f"welcomelist: {s.sender} for {carol}"
    assert await userlists.match(carol, s.sender) == "welcome" and await userlists.match(bob, s.sender) is None
    out = await mailgw(capsys, "--api", url, "quarantine", "blocklist", ids[0])
    assert await userlists.match(bob, s.sender) == "block"

    out = await mailgw(capsys, "--api", url, "quarantine", "learn", ids[1], "--ham")
    assert out.strip() == f"learning {ids[1]} as ham"
    [(topic, key, body)] = [p for p in published if p[0] == topics.MAIL_LEARN]
    request, _ = frames.unpack(body, LearnRequest)
    assert (topic, key, request.label, request.source) == (topics.MAIL_LEARN, ids[1], "ham", "quarantine")

    out = await mailgw(capsys, "--api", url, "quarantine", "release", ids[2])
    assert out.strip() == f"released {ids[2]} to {bob}"
    assert frames.unpack(published[-1][2], MailAction)[0].release_id
    with pytest.raises(SystemExit, match="409"):
        await mailgw(capsys, "--api", url, "quarantine", "release", ids[2])
    out = await mailgw(capsys, "--api", url, "quarantine", "delete", ids[1])
    assert out.strip() == f"deleted {ids[1]}"
    with pytest.raises(SystemExit, match="404"):
        await mailgw(capsys, "--api", url, "quarantine", "view", ids[1])
    with pytest.raises(SystemExit, match="503"):  # no reporter in this API
        await mailgw(capsys, "--api", url, "quarantine", "report")
