"""Header consistency tests (`eval:`) that compare headers with each other, and Hashcash stamps.

Hashcash (hashcash.org, version 1 stamps `1:bits:date:resource:ext:rand:counter`): the SHA-1 of the stamp
starts with `bits` zero bits, which costs the sender about 2^bits hashes. A valid stamp for one of the
message's recipients, dated recently, is evidence of a real sender; we check all of that.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from .message import MessageView

EvalResult = tuple[int, str]

MAX_STAMPS = 10
MAX_STAMP_CHARS = 512
HASHCASH_MAX_AGE = timedelta(days=28)


def parse_date(value: str) -> datetime | None:
    """An RFC 5322 date (a Date header, the stamp of a Received line) with its zone, UTC when it has none."""
    try:
        parsed = parsedate_to_datetime(" ".join(value.split()))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _received_time(view: MessageView) -> datetime | None:
    """When our side (the topmost Received header) got the message."""
    for name, value in view.headers:
        if name.lower() == "received":
            _, _, stamp = value.rpartition(";")
            return parse_date(stamp) if stamp else None
    return None


def _addresses(view: MessageView, name: str) -> list[str]:
    return view.addresses(name)


def check_msmail_priority_without_outlook(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    if not view.exists("X-MSMail-Priority"):
        return 0, ""
    mailer = (view.header("X-Mailer") or "") + (view.header("User-Agent") or "")
    # webmail (SquirrelMail and others) writes the Outlook priority headers too
    if not mailer.strip() or re.search(r"outlook|microsoft|mimeole|exchange|entourage|windows|squirrelmail|webmail",
                                       mailer, re.IGNORECASE):
        return 0, ""
    return 1, mailer.strip()[:60] or "no X-Mailer"


def check_mime_version_missing(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    ctype = (view.header("Content-Type") or "").lower()
    if ctype and not ctype.startswith("text/plain") and not view.exists("MIME-Version"):
        return 1, ctype.split(";")[0].strip()
    return 0, ""


def check_priority_bulk_combo(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    priority = (view.header("X-Priority") or "").strip()
    ctype = (view.header("Content-Type") or "").lower()
    if priority.startswith("1") and "html" in ctype and not view.exists("List-Id"):
        return 1, "X-Priority 1 on HTML mail"
    return 0, ""


def hashcash_bits(stamp: str, recipients: set[str], now: datetime) -> int:
    """Value in bits of a version 1 stamp for one of `recipients`, 0 when it is not valid for them now."""
    stamp = "".join(stamp.split())[:MAX_STAMP_CHARS]
    fields = stamp.split(":")
    if len(fields) != 7 or fields[0] != "1" or not fields[1].isdigit():
        return 0
    claimed, date, resource = int(fields[1]), fields[2], fields[3].lower()
    if resource not in recipients or not 0 < claimed <= 160:
        return 0
    try:
        when = datetime.strptime(date[:6], "%y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return 0
    if not (now - HASHCASH_MAX_AGE <= when <= now + timedelta(days=2)):
        return 0
    digest = int.from_bytes(hashlib.sha1(stamp.encode("ascii", "replace")).digest(), "big")
    leading = 160 - digest.bit_length()
    return claimed if leading >= claimed else 0


def check_hashcash_value(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """check_hashcash_value(min_bits, max_bits): the best valid stamp is worth min..max bits."""
    low, high = (int(args[0]), int(args[1])) if len(args) == 2 else (20, 160)
    stamps = [v for n, v in view.headers if n.lower() in ("x-hashcash", "hashcash")][:MAX_STAMPS]
    if not stamps:
        return 0, ""
    recipients = set(_addresses(view, "To") + _addresses(view, "Cc"))
    now = _received_time(view) or datetime.now(UTC)
    best = max(hashcash_bits(s, recipients, now) for s in stamps)
    return (1, f"{best} bits") if low <= best <= high else (0, "")


_MSGID_HOST = re.compile(r"@([^<>@\s]+)>\s*$")


def _within(domain: str, other: str) -> bool:
    """One domain is the other or a subdomain of it (mail.example.com and example.com)."""
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def check_msgid_recipient_domain(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """The Message-ID was made at the recipient's (To) domain while From is elsewhere: bulk software that
    borrows the recipient's domain, or a message sent without one and numbered by the relay that To names.
    Mail within one organisation (From and To under one domain) is left alone."""
    match = _MSGID_HOST.search(view.header("Message-ID", "raw") or "")
    if match is None:
        return 0, ""
    host = match.group(1).lower().rstrip(".")
    if host not in (view.header("To", "raw") or "").lower():
        return 0, ""  # cannot be the To domain: spare the address parser
    senders, recipients = _addresses(view, "From"), _addresses(view, "To")
    if not senders or not recipients:
        return 0, ""
    to_domain = recipients[0].rpartition("@")[2]
    from_domain = senders[0].rpartition("@")[2]
    if host == to_domain and not _within(from_domain, to_domain):
        return 1, f"Message-ID at {host}"
    return 0, ""


EVALS = {
    "check_msgid_recipient_domain": check_msgid_recipient_domain,
    "check_msmail_priority_without_outlook": check_msmail_priority_without_outlook,
    "check_mime_version_missing": check_mime_version_missing,
    "check_priority_bulk_combo": check_priority_bulk_combo,
    "check_hashcash_value": check_hashcash_value,
}
