"""The spam report: per recipient, the mail quarantined for them and not reported yet.

Every `interval` (24 h by default, 1-24 h) a run looks for recipients with messages (of the report
kinds) in quarantine that no report listed to them yet, and sends each of them one mail, HTML and plain
text, listing those messages (newest first, at most `max_items`) with signed one-click links: release,
delete, welcomelist the sender (`links`). Nobody gets an empty report.

The report travels the delivery path: an accepted `MailAction` frame for the generated message on
`mail.actions` (key = the report's own message id), from the null sender (nothing bounces back to the
gateway), so delivery relays it like a release, with retries and its dedupe ledger. The messages a
report listed are recorded after it was published, so a message stored late (a consumer lagging
behind) is still reported once; a run is recorded even when nothing was sent, and the schedule reads
the last run. A crash between publishing and recording sends
that report again at the next run (at-least-once, like every event here).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import Direction, Fate, MailAction, RecipientDecision, new_message_id

from .links import LinkSigner, Purpose
from .operations import Publish
from .store import Clock, ReportStore, StoreUnavailable, system_clock

log = logging.getLogger("mailgw.reporting.digest")

REPORT_RULE = "spam-report"
LINK_PATH = "/quarantine/link"
MAX_SUBJECT_SHOWN = 200

# Published reports are recorded in batches of this many (one insert each: ~10 ms on chdb): a crash
# re-sends at most this many.
RECORD_BATCH = 100

REPORTS = Counter("mailgw_reporting_spam_reports_total", "Spam reports published to delivery")


@dataclass(frozen=True)
class ReportOptions:
    interval: timedelta = timedelta(hours=24)
    # Base URL of this API as the report's readers reach it: links are <base_url>/quarantine/link/...
    base_url: str = "http://127.0.0.1:8025"
    sender: str = "Mail gateway <postmaster@localhost>"
    kinds: tuple[str, ...] = ("spam",)
    max_items: int = 200
    direction: Direction = Direction.INBOUND
    # The configuration's `link_base_url`: where the quarantine pages are (links are <link_prefix>/link/...);
    # when set, it replaces base_url + "/quarantine".
    link_prefix: str = ""
    # Scheduled runs at all (a report on demand through the API is sent either way).
    enabled: bool = True
    # Runs at this local time of `timezone` and every `interval` from it (the configuration's
    # `at`/`timezone`/`timespan_h`); None: every `interval` after the last run.
    at: time | None = None
    timezone: str = "UTC"

    def link_url(self, purpose: Purpose, token: str) -> str:
        if self.link_prefix:
            return f"{self.link_prefix.rstrip('/')}/link/{purpose}/{token}"
        return link_url(self.base_url, purpose, token)

    def latest_slot(self, now: datetime) -> datetime | None:
        """The latest scheduled run time at or before `now` (None without `at`): today's `at` in the time
        zone, and every `interval` before and after it."""
        if self.at is None:
            return None
        zone = ZoneInfo(self.timezone)
        # Computed in UTC: the difference of two local times of one zone ignores a DST change between them.
        anchor = datetime.combine(now.astimezone(zone).date(), self.at, tzinfo=zone).astimezone(UTC)
        return anchor + ((now - anchor) // self.interval) * self.interval


def link_url(base_url: str, purpose: Purpose, token: str) -> str:
    return f"{base_url.rstrip('/')}{LINK_PATH}/{purpose}/{token}"


def _shown(value: str, limit: int = MAX_SUBJECT_SHOWN) -> str:
    """A sender or subject as shown: one line, bounded (they come from the sender of the spam)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compose(recipient: str, items: list[dict[str, Any]], signer: LinkSigner, options: ReportOptions,
            now: datetime, report_id: str) -> bytes:
    """The report mail to `recipient` for `items` (newest first), multipart/alternative text + HTML."""
    total = items[0]["total"] if items else 0
    links = [{purpose: options.link_url(purpose, signer.token(purpose, item["id"], recipient))
              for purpose in ("release", "delete", "welcomelist")} for item in items]
    expires = now + signer.ttl
    lines = [f"Quarantine report for {recipient}", "",
             f"{total} new message(s) were quarantined for you and not delivered."
             + (f" The newest {len(items)} are listed." if total > len(items) else ""),
             f"The links below work until {format_datetime(expires)}.", ""]
    rows = []
    for item, urls in zip(items, links, strict=True):
        sender, subject = _shown(item["sender"] or "<>"), _shown(item["subject"] or "(no subject)")
        lines += [f"From:    {sender}", f"Subject: {subject}",
                  f"Date:    {item['received_at']}   score {item['score']:.1f}",
                  f"Release:     {urls['release']}", f"Delete:      {urls['delete']}",
                  f"Welcomelist: {urls['welcomelist']}", ""]
        rows.append(
            "<tr>"
            f"<td>{html.escape(item['received_at'] or '')}</td><td>{html.escape(sender)}</td>"
            f"<td>{html.escape(subject)}</td><td>{item['score']:.1f}</td>"
            f"<td><a href=\"{html.escape(urls['release'])}\">Release</a> | "
            f"<a href=\"{html.escape(urls['delete'])}\">Delete</a> | "
            f"<a href=\"{html.escape(urls['welcomelist'])}\">Welcomelist sender</a></td></tr>")
    more = f"<p>{total - len(items)} more are not listed.</p>" if total > len(items) else ""
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Quarantine report</title></head><body>"
        f"<h1>Quarantine report for {html.escape(recipient)}</h1>"
        f"<p>{total} new message(s) were quarantined for you and not delivered. "
        f"The links work until {html.escape(format_datetime(expires))}.</p>"
        "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\"><tr><th>Received</th><th>From</th>"
        f"<th>Subject</th><th>Score</th><th>Actions</th></tr>{''.join(rows)}</table>{more}</body></html>")
    msg = EmailMessage()
    msg["From"] = options.sender
    msg["To"] = recipient
    msg["Subject"] = f"Quarantine report: {total} new message(s)"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=report_id.lower(), domain="mailgw.invalid")
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mailgw-Report-ID"] = report_id
    msg.set_content("\n".join(lines) + "\n")
    msg.add_alternative(page, subtype="html")
    return msg.as_bytes()


def report_action(report_id: str, recipient: str, subject: str, now: datetime, direction: Direction) -> MailAction:
    return MailAction(
        message_id=report_id, decided_at=now, received_at=now, mail_from="", direction=direction,
        client_ip="127.0.0.1", subject=subject, score=0.0,
        decisions=[RecipientDecision(recipient=recipient, fate=Fate.ACCEPT, rule=REPORT_RULE)],
    )


class ReportsOff(RuntimeError):
    """No link secret is configured: no report can be sent (its links could not be signed)."""


class SpamReporter:
    """Sends the spam reports. `configure` replaces the signer and options at once (a configuration change);
    a run in progress finishes with the ones it started with. Without a signer no report is sent."""

    def __init__(self, store: ReportStore, publish: Publish, signer: LinkSigner | None, options: ReportOptions,
                 clock: Clock = system_clock) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self._setup = (signer, options)

    @property
    def signer(self) -> LinkSigner | None:
        return self._setup[0]

    @property
    def options(self) -> ReportOptions:
        return self._setup[1]

    def configure(self, signer: LinkSigner | None, options: ReportOptions) -> None:
        self._setup = (signer, options)

    async def due(self) -> bool:
        signer, options = self._setup
        if signer is None or not options.enabled:
            return False
        last = await self.store.last_report_run()
        if last is None:
            return True
        now = self.clock()
        slot = options.latest_slot(now)
        return last < slot if slot is not None else now - last >= options.interval

    async def run_once(self) -> dict[str, int]:
        """One run: a report to every recipient with something new; recipient -> number of messages."""
        signer, options = self._setup
        if signer is None:
            raise ReportsOff("spam reports are off: no link secret is configured")
        now = self.clock()
        candidates = await self.store.report_candidates(options.kinds, now, options.max_items)
        sent: dict[str, int] = {}
        published: list[tuple[str, list[str], str]] = []
        try:
            for recipient, items in sorted(candidates.items()):
                report_id = new_message_id()
                raw = await asyncio.to_thread(compose, recipient, items, signer, options, now, report_id)
                subject = f"Quarantine report: {items[0]['total']} new message(s)"
                action = report_action(report_id, recipient, subject, now, options.direction)
                frame = await asyncio.to_thread(frames.pack, action, raw)
                await self.publish(frame, topics.MAIL_ACTIONS, report_id)
                REPORTS.inc()
                published.append((recipient, [item["id"] for item in items], report_id))
                sent[recipient] = items[0]["total"]
                if len(published) >= RECORD_BATCH:
                    await self.store.record_reports(published, now)
                    published = []
        except BaseException:
            # Record what was published even when a later report failed (or the task is cancelled), so it is
            # not sent twice; the original exception goes on whatever happens here.
            if published:
                with contextlib.suppress(Exception):
                    await self.store.record_reports(published, now)
            raise
        if published:
            await self.store.record_reports(published, now)
        await self.store.record_report_run(now)
        log.info("spam report run", extra={"reports": len(sent), "messages": sum(sent.values())})
        return sent

    async def run_if_due(self) -> dict[str, int] | None:
        return await self.run_once() if await self.due() else None

    async def run_forever(self, check_s: float) -> None:
        while True:
            try:
                await self.run_if_due()
            except (StoreUnavailable, bus.TransientError, *bus.TRANSIENT_ERRORS) as exc:  # type: ignore[misc]
                # Retried at the next check: the reports already published were recorded.
                log.warning("spam report run failed, retried later", extra={"error": repr(exc)})
            except Exception as exc:  # the schedule must survive a bad run; logged with the cause
                log.exception("spam report run failed", extra={"error": repr(exc)})
            await asyncio.sleep(check_s)
