"""The spam report: content, schedule (injected clock), and its signed one-click links (single purpose,
bound to recipient and message, expiring, tamper-proof), on the real store, Redis and Kafka."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import TYPE_CHECKING

import httpx
import pytest
from aiokafka.errors import KafkaTimeoutError
from starlette.applications import Starlette

from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import frames, topics
from mailgw_libs.events import Direction, Fate, MailAction
from mailgw_libs.failfast import make_redis
from mailgw_libs.userlists import UserListStore
from mailgw_reporting import api, linkpages
from mailgw_reporting.app import assemble
from mailgw_reporting.digest import REPORT_RULE, ReportOptions, SpamReporter
from mailgw_reporting.links import LinkExpired, LinkInvalid, LinkSigner
from mailgw_reporting.operations import QuarantineOps
from mailgw_reporting.settings import ReportingSettings
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario

SECRET = "test-secret-of-the-spam-report-links"
LINK = re.compile(r"https://gw\.example/quarantine/link/(release|delete|welcomelist)/([A-Za-z0-9_.\-]+)")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Recorder:
    records: list[tuple[str, str, bytes]]

    async def publish(self, body: bytes, topic: str, key: str) -> None:
        self.records.append((topic, key, body))

    def actions(self) -> list[tuple[MailAction, bytes]]:
        return [frames.unpack(body, MailAction) for topic, _, body in self.records if topic == topics.MAIL_ACTIONS]


@dataclass
class Setup:
    store: ReportStore
    clock: Clock
    recorder: Recorder
    signer: LinkSigner
    reporter: SpamReporter
    userlists: UserListStore
    http: httpx.AsyncClient


@pytest.fixture
async def setup(chdb_url: str, redis_url: str, unique: str, scenario: Scenario) -> AsyncIterator[Setup]:
    # A database of its own: the schedule reads the last run, and candidates span every recipient.
    clock = Clock(scenario.at(3600))
    store = ReportStore(chdb_url, database=f"report_{unique}", clock=clock)
    recorder = Recorder([])
    signer = LinkSigner(SECRET, timedelta(hours=72), clock)
    options = ReportOptions(interval=timedelta(hours=6), base_url="https://gw.example/", max_items=2)
    reporter = SpamReporter(store, recorder.publish, signer, options, clock)
    redis = make_redis(redis_url, 5.0)
    userlists = UserListStore(redis, f"test:{unique}:userlists")
    ops = QuarantineOps(store, recorder.publish, userlists, clock)
    app = Starlette(routes=api.routes(store, recorder.publish, userlists, ops) + linkpages.routes(signer, ops))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://gw.example") as http:
        yield Setup(store, clock, recorder, signer, reporter, userlists, http)
    await redis.aclose()
    await store.close()


async def quarantine(s: Scenario, store: ReportStore, recipients: list[str], subject: str, t: float,
                     kind: str = "spam") -> str:
    rx = s.received(recipients, subject=subject, t=t)
    s.quarantine(rx, recipients, s.raw(subject), kind=kind, t=t, score=8.5)
    await s.store_all(store)
    s.events.clear()
    return rx.message_id


def parts(raw: bytes) -> tuple[Message, str, str]:
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/alternative"
    text, page = (p.get_payload(decode=True).decode() for p in msg.get_payload())  # type: ignore[union-attr]
    return msg, text, page


async def test_report_lists_new_mail_once_per_recipient(setup: Setup, scenario: Scenario) -> None:
    s, st = scenario, setup
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    await quarantine(s, st.store, [bob], "First <script>alert(1)</script>", t=10)
    m2 = await quarantine(s, st.store, [bob, carol], "Second", t=20)
    await quarantine(s, st.store, [bob], "A virus", t=30, kind="virus")  # not in a user's report
    m4 = await quarantine(s, st.store, [bob], "Fourth", t=40)

    sent = await st.reporter.run_once()
    assert sent == {bob: 3, carol: 1}
    reports = {a.decisions[0].recipient: (a, raw) for a, raw in st.recorder.actions()}
    action, raw = reports[bob]
    assert action.mail_from == "" and action.direction is Direction.INBOUND
    assert [(d.recipient, d.fate, d.rule) for d in action.decisions] == [(bob, Fate.ACCEPT, REPORT_RULE)]
    assert st.recorder.records[0][1] == action.message_id  # keyed by the report's own id
    msg, text, page = parts(raw)
    assert msg["To"] == bob and msg["Auto-Submitted"] == "auto-generated" and "3 new" in msg["Subject"]
    # max_items=2: the newest two are listed, the third is counted (and listed by the next report).
    assert "Fourth" in text and "Second" in text and "First" not in text and "A virus" not in text
    assert "1 more are not listed" in page and "3 new message(s)" in text
    assert "<script>" not in page and "Fourth" in page
    tokens = LINK.findall(text)
    assert sorted({p for p, _ in tokens}) == ["delete", "release", "welcomelist"] and len(tokens) == 6
    assert {st.signer.check(p, t).message_id for p, t in tokens} == {m4, m2}
    assert all(st.signer.check(p, t).recipient == bob for p, t in tokens)
    assert LINK.findall(page) == tokens  # the same links in the HTML part
    assert "A virus" not in parts(reports[carol][1])[1] and "Second" in parts(reports[carol][1])[1]

    # Nothing new: nobody gets a report. Then the one left over and a new one.
    st.recorder.records.clear()
    assert await st.reporter.run_once() == {bob: 1}
    assert "First" in parts(st.recorder.actions()[0][1])[1]
    assert await st.reporter.run_once() == {}
    st.clock.now = s.at(3700)
    m5 = await quarantine(s, st.store, [carol], "Fifth", t=3650)
    st.recorder.records.clear()
    assert await st.reporter.run_once() == {carol: 1}
    assert [st.signer.check(p, t).message_id for p, t in LINK.findall(parts(st.recorder.actions()[0][1])[1])] == [
        m5] * 3
    # A message stored late (quarantined before the last run, ingested after it) is still reported.
    await quarantine(s, st.store, [carol], "Late", t=100)
    assert await st.reporter.run_once() == {carol: 1}
    assert "Late" in parts(st.recorder.actions()[-1][1])[1]
    # Released or deleted messages are not reported.
    m6 = await quarantine(s, st.store, [bob], "Released", t=3660)
    m7 = await quarantine(s, st.store, [bob], "Deleted", t=3661)
    await st.http.post(f"/api/v1/quarantine/{m6}/release")
    await st.http.delete(f"/api/v1/quarantine/{m7}")
    assert await st.reporter.run_once() == {}


async def test_schedule_follows_the_interval(setup: Setup, scenario: Scenario) -> None:
    s, st = scenario, setup
    bob = s.rcpt("bob")
    assert await st.reporter.due()  # never ran
    assert await st.reporter.run_if_due() == {}  # ran: nothing to send, nothing sent
    assert st.recorder.records == []
    await quarantine(s, st.store, [bob], "New", t=3000)
    st.clock.now = s.at(3600) + timedelta(hours=5, minutes=59)
    assert not await st.reporter.due() and await st.reporter.run_if_due() is None
    st.clock.now = s.at(3600) + timedelta(hours=6)
    assert await st.reporter.run_if_due() == {bob: 1}
    assert not await st.reporter.due()
    settings = ReportingSettings()
    assert settings.report_interval_h == 24  # daily by default
    for bad in (0, 25):
        with pytest.raises(ValueError):
            ReportingSettings(report_interval_h=bad)


async def test_the_periodic_loop_sends_when_due(setup: Setup, scenario: Scenario) -> None:
    s, st = scenario, setup
    await quarantine(s, st.store, [s.rcpt("bob")], "Loop", t=3000)
    task = asyncio.create_task(st.reporter.run_forever(0.01))
    try:
        for _ in range(500):
            if st.recorder.records:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert len(st.recorder.actions()) == 1


def test_links_are_signed_single_purpose_bound_and_expiring(scenario: Scenario) -> None:
    clock = Clock(scenario.base)
    signer = LinkSigner(SECRET, timedelta(hours=2), clock)
    token = signer.token("release", "01MESSAGE", "Bob@Example.com")
    link = signer.check("release", token)
    assert (link.purpose, link.message_id, link.recipient) == ("release", "01MESSAGE", "bob@example.com")
    for purpose in ("delete", "welcomelist", "learn", ""):
        with pytest.raises(LinkInvalid):
            signer.check(purpose, token)
    with pytest.raises(LinkInvalid):
        LinkSigner("another-secret-of-16-chars", timedelta(hours=2), clock).check("release", token)
    _, _, rest = token.partition(".")
    forged = signer.token("release", "01OTHER", "bob@example.com").partition(".")[0] + "." + rest
    for bad in (forged, token[:-1], token + "x", token.replace(".", "", 1), "", "x" * 5000, "a.b.c", "..."):
        with pytest.raises(LinkInvalid):
            signer.check("release", bad)
    clock.now = scenario.base + timedelta(hours=2, seconds=1)
    with pytest.raises(LinkExpired):
        signer.check("release", token)
    clock.now = scenario.base - timedelta(minutes=5)  # signed "in the future": not accepted either
    with pytest.raises(LinkInvalid):
        signer.check("release", token)
    with pytest.raises(ValueError):
        LinkSigner("short", timedelta(hours=1), clock)


async def test_links_work_once_per_purpose(setup: Setup, scenario: Scenario) -> None:
    s, st = scenario, setup
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    mid = await quarantine(s, st.store, [bob, carol], "Linked", t=10)
    other = await quarantine(s, st.store, [bob], "Other", t=11)

    def url(purpose: str, message_id: str = mid, recipient: str = bob) -> str:
        return f"/quarantine/link/{purpose}/{st.signer.token(purpose, message_id, recipient)}"  # type: ignore[arg-type]

    # GET only shows what the link does: nothing is released by a prefetch.
    r = await st.http.get(url("release"))
    assert r.status_code == 200 and "<form method=\"post\">" in r.text and "Linked" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert st.recorder.records == []
    r = await st.http.post(url("release"))
    assert r.status_code == 200 and "released" in r.text
    [(action, _)] = st.recorder.actions()
    assert [d.recipient for d in action.decisions] == [bob] and action.release_id  # bob only, not carol
    r = await st.http.post(url("release"))
    assert r.status_code == 409 and "already released" in r.text
    assert len(st.recorder.actions()) == 1
    # carol's own link still releases it for her.
    assert (await st.http.post(url("release", recipient=carol))).status_code == 200
    assert [d.recipient for d in st.recorder.actions()[1][0].decisions] == [carol]

    # Welcomelist: writes the user's list (real Redis).
    assert (await st.http.post(url("welcomelist", other))).status_code == 200
    assert await st.userlists.match(bob, s.sender) == "welcome"
    assert await st.userlists.match(carol, s.sender) is None

    # Delete: once; then the message is gone for every link.
    assert (await st.http.post(url("delete", other))).status_code == 200
    assert (await st.http.post(url("delete", other))).status_code == 404
    assert (await st.http.get(url("release", other))).status_code == 404

    # A delete link of a message with other recipients deletes only the user's copy.
    shared = await quarantine(s, st.store, [bob, carol], "Shared", t=12)
    assert (await st.http.post(url("delete", shared))).status_code == 200
    assert (await st.http.post(url("delete", shared))).status_code == 404
    assert (await st.http.post(url("release", shared))).status_code == 404
    item = (await st.http.get(f"/api/v1/quarantine/{shared}")).json()
    assert item["state"] == "quarantined" and item["dismissed_by"] == [bob]
    pending = await st.store.report_candidates(("spam",), st.clock(), 100)
    assert shared not in [i["id"] for i in pending.get(bob, [])]
    assert shared in [i["id"] for i in pending[carol]]
    assert (await st.http.post(url("delete", shared, carol))).status_code == 200  # the last copy: deleted
    assert (await st.http.get(f"/api/v1/quarantine/{shared}")).status_code == 404

    # A release link is not a delete link; a link for a message that is not the user's is refused.
    token = st.signer.token("release", mid, bob)
    r = await st.http.post(f"/quarantine/link/delete/{token}")
    assert r.status_code == 403 and "not valid" in r.text
    assert (await st.http.post(url("release", other, carol))).status_code in (400, 404)
    # Tampered, unknown purpose, garbage.
    for path in (f"/quarantine/link/release/{token[:-2]}xx", f"/quarantine/link/learn/{token}",
                 "/quarantine/link/release/%3Cscript%3E", f"/quarantine/link/release/{'A' * 3000}"):
        r = await st.http.post(path)
        assert r.status_code == 403 and "not valid" in r.text and "<script>" not in r.text, path
    # Expired.
    st.clock.now += timedelta(hours=73)
    r = await st.http.get(f"/quarantine/link/release/{token}")
    assert r.status_code == 410 and "expired" in r.text
    assert len(st.recorder.actions()) == 2


async def test_without_a_secret_no_link_is_accepted(store: ReportStore) -> None:
    app = Starlette(routes=linkpages.routes(None, QuarantineOps(store)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as http:
        r = await http.get("/quarantine/link/release/whatever")
    assert r.status_code == 403 and "not enabled" in r.text


async def test_report_and_link_through_the_service(fresh_kafka: str, chdb_url: str, redis_url: str,
                                                   scenario: Scenario, unique: str) -> None:
    """The report goes to Kafka as an accepted action; its release link publishes the original."""
    s = scenario
    bob = s.rcpt("bob")
    raw = s.raw("Digest me", "spam body")
    rx = s.received([bob], raw=raw)
    s.quarantine(rx, [bob], raw, score=9, t=5)
    clock = Clock(s.at(60))
    settings = ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0,
                                 redis_url=redis_url, database=f"svc_{unique}", report_secret=SECRET,
                                 report_base_url="https://gw.example")
    service = assemble(settings, clock=clock, background=False)
    assert service.reporter is not None
    async with running(service.runtime):
        for topic, data in s.events:
            await produce(fresh_kafka, topic, rx.message_id, data)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.runtime.app()),
                                     base_url="https://gw.example") as http:
            for _ in range(300):
                if (await http.get(f"/api/v1/quarantine/{rx.message_id}")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert await service.reporter.run_once() == {bob: 1}
            [record] = [r for r in await collect(fresh_kafka, topics.MAIL_ACTIONS, 1)
                        if r.key != rx.message_id.encode()]
            action, report = frames.unpack(record.value or b"", MailAction)
            assert record.key == action.message_id.encode() and action.decisions[0].recipient == bob
            links = dict(LINK.findall(parts(report)[1]))
            r = await http.post(f"/quarantine/link/release/{links['release']}")
            assert r.status_code == 200, r.text
            records = await collect(fresh_kafka, topics.MAIL_ACTIONS, 1, key=rx.message_id)
            released, sent = frames.unpack(records[-1].value or b"", MailAction)
            assert sent == raw and released.release_id and [d.recipient for d in released.decisions] == [bob]


async def test_a_failed_run_records_what_it_published(setup: Setup, scenario: Scenario) -> None:
    s, st = scenario, setup
    bob, carol = s.rcpt("bob"), s.rcpt("carol")
    await quarantine(s, st.store, [bob], "For bob", t=10)
    await quarantine(s, st.store, [carol], "For carol", t=11)
    calls = 0

    async def flaky(body: bytes, topic: str, key: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KafkaTimeoutError("no acknowledgement (test)")
        await st.recorder.publish(body, topic, key)

    st.reporter.publish = flaky
    with pytest.raises(KafkaTimeoutError):
        await st.reporter.run_once()
    assert [a.decisions[0].recipient for a, _ in st.recorder.actions()] == [bob]
    assert await st.reporter.due()  # the failed run does not count
    assert await st.reporter.run_once() == {carol: 1}  # bob is not sent his report twice
