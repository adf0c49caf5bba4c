"""Event contracts carried on the bus.

Rules (see docs/conventions): pydantic v2, frozen, unknown fields ignored, a
`schema_version` on each, producers only ever add optional fields. Events that
carry the raw message travel as a frame (see `frames.py`): JSON header + zstd
compressed message bytes, never base64 inside JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ulid import ULID


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_message_id() -> str:
    """Sortable, unique queue id shown to administrators and used as Kafka key."""
    return str(ULID())


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    schema_version: int = 1


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class TlsInfo(Event):
    version: str
    cipher: str


class MailReceived(Event):
    """Envelope of one accepted message; the raw bytes travel beside it in the frame."""

    message_id: str
    received_at: datetime
    client_ip: str
    client_helo: str = ""
    mail_from: str
    rcpt_tos: list[str]
    direction: Direction
    size: int
    tls: TlsInfo | None = None
    rfc_message_id: str = ""
    subject: str = ""
    header_from: str = ""
    # Ingress checks: SPF result of MAIL FROM (or HELO for the null sender) and the client's verified rDNS name.
    spf: str = ""  # "pass" | "fail" | "softfail" | "neutral" | "none" | "temperror" | "permerror" | "" (not checked)
    spf_domain: str = ""
    client_rdns: str = ""


class SymbolHit(Event):
    name: str
    score: float
    detail: str = ""


Scorer = Literal["antispam", "antivirus", "ocr"]


class HeaderChange(Event):
    name: str
    value: str


class ArchiveMember(Event):
    name: str
    content_type: str = ""  # detected by content


class AttachmentInfo(Event):
    """One MIME leaf part as the antivirus layer saw it (for the rule system's content-type/file-name objects)."""

    part_index: int  # position in `mime.leaf_parts(msg)` order
    filename: str = ""
    declared_type: str = ""
    detected_type: str = ""
    size: int = 0
    archive_members: list[ArchiveMember] = Field(default_factory=list)


class Verdict(Event):
    message_id: str
    scorer: str
    symbols: list[SymbolHit] = Field(default_factory=list)
    score: float = 0.0
    duration_ms: float = 0.0
    viruses: list[str] = Field(default_factory=list)
    failed: bool = False
    error: str = ""
    # Headers a scorer wants on delivered mail (e.g. Authentication-Results); rules copies them to the decisions.
    add_headers: list[HeaderChange] = Field(default_factory=list)
    attachments: list[AttachmentInfo] = Field(default_factory=list)

    @classmethod
    def of(cls, message_id: str, scorer: str, hits: list[SymbolHit], duration_ms: float,
           viruses: list[str] | None = None, failed: bool = False, error: str = "") -> Verdict:
        return cls(message_id=message_id, scorer=scorer, symbols=hits,
                   score=round(sum(h.score for h in hits), 3), duration_ms=round(duration_ms, 3),
                   viruses=viruses or [], failed=failed, error=error)


class Fate(StrEnum):
    ACCEPT = "accept"
    BLOCK = "block"
    QUARANTINE = "quarantine"


class AttachmentRemoval(Event):
    """Attachments to strip before delivery (rule action "remove attachments")."""

    # Positions in `mime.leaf_parts(msg)` order; empty with `all_attachments` = every attachment.
    part_indexes: list[int] = Field(default_factory=list)
    all_attachments: bool = False
    replacement_text: str = "This attachment was removed by the mail gateway's policy."
    # The original stays in the attachment quarantine when set.
    keep_original: bool = True


class Disclaimer(Event):
    text: str
    html: str = ""
    position: Literal["top", "bottom"] = "bottom"


class RuleMatch(Event):
    """Which rule decided (or modified) a recipient's fate, and through which objects, for tracking."""

    rule: str
    priority: int = 0
    objects: list[str] = Field(default_factory=list)  # "who:Blocklist", "what:Virus", "when:Office hours" ...
    actions: list[str] = Field(default_factory=list)


class RecipientDecision(Event):
    recipient: str
    fate: Fate
    rule: str
    spam: bool = False
    quarantine_kind: str = ""  # "spam" | "virus" | "attachment" | "policy" when fate is quarantine
    add_headers: list[HeaderChange] = Field(default_factory=list)
    subject_tag: str = ""
    # Header fields removed before delivery (e.g. forged X-Spam-* from the sender).
    remove_headers: list[str] = Field(default_factory=list)
    remove_attachments: AttachmentRemoval | None = None
    disclaimers: list[Disclaimer] = Field(default_factory=list)
    matched: list[RuleMatch] = Field(default_factory=list)
    # "tempfail": the message could not be judged (e.g. antivirus down) and policy says retry later.
    tempfail: bool = False


class Notification(Event):
    """A notification mail the rules asked for; delivery sends it as real mail."""

    to: list[str]
    subject: str
    text: str
    html: str = ""
    attach_original: bool = False
    rule: str = ""


class Bcc(Event):
    to: str
    original: bool = True  # False: the processed (modified) message
    rule: str = ""


class MailAction(Event):
    """The decision on one message, per recipient; the original travels beside it in the frame."""

    message_id: str
    decided_at: datetime
    received_at: datetime
    mail_from: str
    direction: Direction
    client_ip: str
    subject: str = ""
    score: float
    symbols: list[SymbolHit] = Field(default_factory=list)
    viruses: list[str] = Field(default_factory=list)
    missing_scorers: list[str] = Field(default_factory=list)
    failed_scorers: list[str] = Field(default_factory=list)
    decisions: list[RecipientDecision]
    # Set on an action that releases the message from quarantine (one id per release): delivery keys its
    # ledger of completed sends by (message id, release id, recipient), so a forced second release is sent.
    release_id: str = ""
    notifications: list[Notification] = Field(default_factory=list)
    bcc: list[Bcc] = Field(default_factory=list)


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    QUARANTINED = "quarantined"
    BLOCKED = "blocked"


class DeliveryResult(Event):
    message_id: str
    recipient: str
    status: DeliveryStatus
    at: datetime
    attempt: int = 1
    smtp_code: int = 0
    smtp_response: str = ""
    next_attempt_at: datetime | None = None
    relay: str = ""


class RetryEnvelope(Event):
    """Header of a deferred delivery travelling on a retry topic."""

    action: MailAction
    recipients: list[str]
    attempt: int
    first_attempt_at: datetime
    not_before: datetime
    # A delay warning (DSN, Action: delayed) has been sent to the sender for these recipients.
    warned: bool = False


class QuarantinedMessage(Event):
    message_id: str
    kind: str
    recipients: list[str]
    mail_from: str
    subject: str = ""
    score: float = 0.0
    symbols: list[SymbolHit] = Field(default_factory=list)
    viruses: list[str] = Field(default_factory=list)
    received_at: datetime
    quarantined_at: datetime
    rule: str = ""


class SmtpEvent(Event):
    """A refusal (or other notable event) during the SMTP dialogue, for statistics."""

    at: datetime
    client_ip: str
    helo: str = ""
    mail_from: str = ""
    rcpt: str = ""
    reason: str
    check: str
    code: int
    session_id: str = ""


class LearnRequest(Event):
    """Train Bayes with one message (frame header; the raw message travels beside it on `mail.learn`)."""

    message_id: str
    label: Literal["spam", "ham"]
    source: str  # "autolearn" | "quarantine" | "cli" | "api"
    requested_at: datetime
    recipient: str = ""  # set for per-user databases
    forget: bool = False  # unlearn a previous training of this message
