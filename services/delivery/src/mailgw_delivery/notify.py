"""Notifications and BCC copies the rules ask for, as actions delivered like any mail.

Both travel as synthetic actions on `mail.actions` (like DSNs): this service consumes them and sends them
through the same routing, retries, ledger and results. Their ids are derived from the original's
(`<id>.notify<n>`, `<id>.bcc<n>`), so a redelivered action publishes the same ones again and the ledger
sends each once. They are published on the first attempt of an action only (never again on retries).

- A notification is a new message from the configured postmaster address (envelope and From) with the
  rule's subject, text (and HTML), and the original attached as message/rfc822 when asked.
- A BCC copy goes to its address with the original envelope sender: the original bytes, or the processed
  copy (the modifications of the first accepted recipient).
"""

from __future__ import annotations

from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from mailgw_libs import mime
from mailgw_libs.events import Direction, Fate, MailAction, Notification, RecipientDecision

NOTIFY_RULE = "notification"
BCC_RULE = "bcc"
# Largest original attached to a notification; a bigger one is named, not attached.
MAX_ATTACHED_BYTES = 10 * 1024 * 1024
MAX_SUBJECT_CHARS = 200


def _text(text: str, subtype: str) -> MIMEText:
    if text.isascii():
        return MIMEText(text, subtype, "us-ascii")
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return MIMEText(text, subtype, charset)  # type: ignore[arg-type]  # typeshed: str only, Charset works


def _one_line(value: str, limit: int = MAX_SUBJECT_CHARS) -> str:
    """One header line (no CR/LF from the rule's text can start a header of its own), RFC 2047 if not ASCII."""
    value = " ".join(value.split())[:limit]
    return value if value.isascii() else Header(value, "utf-8").encode()


def notification_message(note: Notification, raw: bytes, sender: str, now: datetime, message_id: str,
                         domain: str) -> bytes:
    body: Message = _text(note.text, "plain")
    if note.html:
        alternative = MIMEMultipart("alternative")
        alternative.attach(_text(note.text, "plain"))
        alternative.attach(_text(note.html, "html"))
        body = alternative
    if note.attach_original:
        mixed = MIMEMultipart("mixed")
        mixed.attach(body)
        if len(raw) <= MAX_ATTACHED_BYTES:
            mixed.attach(MIMEMessage(mime.parse(raw)))
        else:
            mixed.attach(_text(f"The original message ({len(raw)} bytes) is too large to attach.", "plain"))
        body = mixed
    body["From"] = sender
    body["To"] = _one_line(", ".join(note.to), limit=4000)
    body["Subject"] = _one_line(note.subject)
    body["Date"] = format_datetime(now)
    body["Message-ID"] = make_msgid(idstring=message_id, domain=domain)
    body["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-answers to this
    if "MIME-Version" not in body:
        body["MIME-Version"] = "1.0"
    return body.as_bytes(policy=SMTP)


def notification_action(original: MailAction, note: Notification, notify_id: str, sender: str,
                        now: datetime) -> MailAction:
    return MailAction(
        message_id=notify_id, decided_at=now, received_at=now, mail_from=sender, direction=Direction.INBOUND,
        client_ip="127.0.0.1", subject=note.subject[:MAX_SUBJECT_CHARS], score=0.0,
        decisions=[RecipientDecision(recipient=to, fate=Fate.ACCEPT, rule=note.rule or NOTIFY_RULE)
                   for to in dict.fromkeys(note.to)],
    )


def bcc_action(original: MailAction, to: str, bcc_id: str, rule: str, now: datetime) -> MailAction:
    return MailAction(
        message_id=bcc_id, decided_at=now, received_at=original.received_at, mail_from=original.mail_from,
        direction=original.direction, client_ip=original.client_ip, subject=original.subject, score=original.score,
        decisions=[RecipientDecision(recipient=to, fate=Fate.ACCEPT, rule=rule or BCC_RULE)],
    )
