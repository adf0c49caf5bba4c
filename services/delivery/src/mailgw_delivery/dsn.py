"""Delivery status notifications (RFC 3464) to the envelope sender, built with the stdlib `email` package.

A DSN is a `multipart/report; report-type=delivery-status` message of three parts: a human-readable
text, the `message/delivery-status` fields (one per-message block, one block per recipient) and the
original message's header block (`text/rfc822-headers`, never its body). It is sent with the null
sender (`MAIL FROM:<>`), so a DSN that cannot be delivered is never bounced in turn (RFC 5321 4.5.5),
and a message from the null sender never gets one.

The DSN travels as an ordinary action (`dsn_action`): a `MailAction` with one accepted recipient, the
original sender, on `mail.actions`; delivery consumes it like any message (retries, ledger, results).
Its message id is derived from the original's (`<id>.dsn<attempt>` / `<id>.delay`), so a redelivered
action that bounces again produces the same DSN id, and the ledger keeps it from being sent twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Literal

from mailgw_libs import mime
from mailgw_libs.events import Direction, Fate, MailAction, RecipientDecision

from .retry import LIFETIME_EXCEEDED

DsnAction = Literal["failed", "delayed"]

# RFC 3463 enhanced status code at the start of a reply text ("5.1.1 No such user").
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
# Status when the queue lifetime is over: X.4.7 "delivery time expired" (RFC 3463).
EXPIRED_STATUS = "4.4.7"
DSN_RULE = "dsn"
# Largest original header block quoted in a DSN; the rest is cut (the body is never quoted).
MAX_QUOTED_HEADERS = 64 * 1024


def enhanced_status(code: int, response: str) -> str:
    """The enhanced status of a reply: the one the relay gave, else derived from the reply code."""
    match = _ENHANCED.match(response)
    if match and (not code or str(code)[0] == match.group(1)):
        return ".".join(match.groups())
    if 500 <= code < 600:
        return "5.0.0"
    if 400 <= code < 500:
        return "4.0.0"
    return "5.0.0"  # no SMTP answer at all (e.g. an address that cannot go on the wire)


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's block of a DSN."""

    recipient: str
    action: DsnAction
    status: str  # enhanced status code, e.g. 5.1.1
    diagnostic: str = ""  # the relay's answer ("550 5.1.1 No such user"), or why there is none
    smtp: bool = True  # the diagnostic is an SMTP reply (diagnostic-type smtp) or our own text
    remote_mta: str = ""

    @classmethod
    def bounced(cls, recipient: str, code: int, response: str, relay: str) -> RecipientReport:
        """A permanent failure (5xx, or an address that cannot be sent to)."""
        if code:
            return cls(recipient, "failed", enhanced_status(code, response), f"{code} {response}".strip(),
                       remote_mta=relay)
        return cls(recipient, "failed", enhanced_status(0, response), response, smtp=False)

    @classmethod
    def expired(cls, recipient: str, code: int, response: str, relay: str) -> RecipientReport:
        """The queue lifetime is over; the diagnostic is the relay's last answer."""
        if code:
            return cls(recipient, "failed", EXPIRED_STATUS, f"{code} {response}".strip(), remote_mta=relay)
        return cls(recipient, "failed", EXPIRED_STATUS, f"{LIFETIME_EXCEEDED}; last error: {response}", smtp=False)

    @classmethod
    def delayed(cls, recipient: str, code: int, response: str, relay: str) -> RecipientReport:
        if code:
            return cls(recipient, "delayed", enhanced_status(code, response), f"{code} {response}".strip(),
                       remote_mta=relay)
        return cls(recipient, "delayed", "4.4.1", response or "no answer from the relay", smtp=False)


def _final_recipient(address: str) -> str:
    """`rfc822; addr`, or for an internationalized address RFC 6533's `utf-8; ` with utf-8-addr-xtext."""
    if address.isascii():
        return f"rfc822; {address}"
    xtext = "".join(c if "!" <= c <= "~" and c not in "+=\\" else f"\\x{{{ord(c):X}}}" for c in address)
    return f"utf-8; {xtext}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _header(value: str) -> str:
    """A header value on one line; RFC 2047-encoded when it is not ASCII."""
    value = _one_line(value)
    return value if value.isascii() else Header(value, "utf-8").encode()


def _remote_host(relay: str) -> str:
    host, sep, port = relay.rpartition(":")
    return host if sep and port.isdigit() else relay


def _text_part(text: str, subtype: str = "plain") -> MIMEText:
    if text.isascii():
        part = MIMEText(text, subtype, "us-ascii")
    else:
        charset = Charset("utf-8")
        charset.body_encoding = QP
        part = MIMEText(text, subtype, charset)  # type: ignore[arg-type]  # typeshed: str only, Charset works
    del part["MIME-Version"]
    return part


class DsnBuilder:
    """Builds DSNs as sent by `reporting_mta` (a host name: Reporting-MTA and the From domain)."""

    def __init__(self, reporting_mta: str, delay_warning_h: float = 4.0, lifetime_h: float = 120.0) -> None:
        self.reporting_mta = reporting_mta
        self.delay_warning_h = delay_warning_h
        self.lifetime_h = lifetime_h

    @property
    def from_address(self) -> str:
        return f"MAILER-DAEMON@{self.reporting_mta}"

    def build(self, action: MailAction, raw: bytes, reports: Sequence[RecipientReport], now: datetime,
              message_id: str = "") -> bytes:
        """The DSN (bytes, CRLF line ends) for `reports` of the message `raw` described by `action`."""
        if not reports:
            raise ValueError("a DSN needs at least one recipient")
        delayed = all(r.action == "delayed" for r in reports)
        report = MIMEMultipart("report", report_type="delivery-status")
        report["From"] = f"Mail Delivery System <{self.from_address}>"
        report["To"] = _header(action.mail_from)
        report["Subject"] = ("Delayed Mail (still being retried)" if delayed
                             else "Undelivered Mail Returned to Sender")
        report["Date"] = format_datetime(now)
        report["Message-ID"] = make_msgid(idstring=message_id or None, domain=self.reporting_mta)
        report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-answers to this
        if action.subject:
            report["X-Original-Subject"] = _header(action.subject[:200])
        report.attach(_text_part(self._human(action, reports, delayed)))
        report.attach(self._status_part(action, reports))
        report.attach(self._headers_part(raw))
        return report.as_bytes(policy=SMTP)

    def _human(self, action: MailAction, reports: Sequence[RecipientReport], delayed: bool) -> str:
        lines = [f"This is the mail system at host {self.reporting_mta}.", ""]
        if delayed:
            lines += [
                f"Your message could not be delivered for more than {self.delay_warning_h:g} hours.",
                f"It will be retried until it is {self.lifetime_h:g} hours old.",
                "This is a warning only: you do not need to send the message again.",
            ]
        else:
            lines += [
                "Your message could not be delivered to one or more recipients.",
                "It is attached below (headers only). The delivery failed permanently:",
                "the message will not be retried.",
            ]
        lines.append("")
        if action.subject:
            lines += [f"Subject: {_one_line(action.subject)[:200]}", ""]
        for r in reports:
            lines.append(f"<{r.recipient}>: {_one_line(r.diagnostic) or r.status}")
        return "\n".join(lines) + "\n"

    def _status_part(self, action: MailAction, reports: Sequence[RecipientReport]) -> Message:
        per_message = Message()
        per_message["Reporting-MTA"] = f"dns; {self.reporting_mta}"
        per_message["X-Mailgw-Queue-ID"] = action.message_id
        per_message["Arrival-Date"] = format_datetime(action.received_at)
        blocks: list[Message | str] = [per_message]
        for r in reports:
            block = Message()
            block["Final-Recipient"] = _final_recipient(r.recipient)
            block["Action"] = r.action
            block["Status"] = r.status
            if r.remote_mta:
                block["Remote-MTA"] = f"dns; {_remote_host(r.remote_mta)}"
            if r.diagnostic:
                kind = "smtp" if r.smtp else "X-mailgw"
                block["Diagnostic-Code"] = f"{kind}; {_one_line(r.diagnostic)[:900]}"
            blocks.append(block)
        part = Message()
        part["Content-Type"] = "message/delivery-status"
        part.set_payload(blocks)
        return part

    def _headers_part(self, raw: bytes) -> MIMEText:
        head = mime.split_head(raw)[0][:MAX_QUOTED_HEADERS]
        text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return _text_part(text.rstrip("\n") + "\n", "rfc822-headers")


def dsn_action(original: MailAction, dsn_id: str, now: datetime) -> MailAction:
    """The action that delivers a DSN: from the null sender, to the original envelope sender."""
    direction = Direction.OUTBOUND if original.direction is Direction.INBOUND else Direction.INBOUND
    return MailAction(
        message_id=dsn_id, decided_at=now, received_at=now, mail_from="", direction=direction,
        client_ip="127.0.0.1", subject="Delivery status notification", score=0.0,
        decisions=[RecipientDecision(recipient=original.mail_from, fate=Fate.ACCEPT, rule=DSN_RULE)],
    )
