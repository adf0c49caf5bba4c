"""Ratware checks (`eval:`): headers that a real mail client would never write together.

Outlook Express, Outlook and Windows CDO put a Windows FILETIME (100 ns ticks since 1601, UTC) into the
Message-ID (`<0012abcd01c24d19$f7f142e0$010ea8c0@host>`: the eight hex digits before the first `$` are the
high 32 bits of the send time) and into their MIME boundaries (`----=_NextPart_000_0037_01C24D21.FF37C620`).
One high word spans about seven minutes, so a real message's Message-ID and boundary agree with its Date
header to within the sender's clock settings. Bulk tools that imitate these clients fill the digits at
random: the time they spell out is years away from the Date.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import pairwise

from .headerchecks import parse_date
from .message import MessageView

EvalResult = tuple[int, str]

_FILETIME_EPOCH = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
DEFAULT_MAX_DAYS = 7.0

# <[counter][filetime-high]$[filetime-low]$[host-ip]@host>, also the newer form with a `$` before the `@`
_MS_MSGID = re.compile(r"^\s*<([0-9a-f]{4,16})\$[0-9a-f]{8}\$[0-9a-f]{8}\$?@[^<>\s]{1,255}>\s*$", re.IGNORECASE)
_MS_BOUNDARY = re.compile(r"""boundary\s*=\s*["']?-{0,12}=_NextPart_\d{3}_[0-9a-f]{4}_([0-9a-f]{8})\.[0-9a-f]{8}""",
                          re.IGNORECASE)
# Mail programs that always write a Message-ID of their own, recognisable shape: (X-Mailer, Message-ID, what
# a relay may put there instead). A message that names the program but carries another Message-ID was not
# written by it (most often the relay added one because the sending tool wrote none).
_CLIENT_MSGIDS: tuple[tuple[str, re.Pattern[str], re.Pattern[str], re.Pattern[str] | None], ...] = (
    ("Outlook Express", re.compile(r"^\s*Microsoft Outlook Express [4-6]\.\d\d\.\d{4}"), _MS_MSGID,
     # Hotmail and MSN replace the Message-ID of the mail that Outlook Express sends through them
     re.compile(r"@(?:[a-z0-9-]+\.)?(?:hotmail|msn)\.com>\s*$", re.IGNORECASE)),
    ("Outlook 2000", re.compile(r"^\s*Microsoft Outlook IMO\b"),
     re.compile(r"^\s*<(?:[A-P]{28}\.|[0-9a-f]{4,16}\$)", re.IGNORECASE), None),
    ("The Bat!", re.compile(r"^\s*The Bat! \(v\d"), re.compile(r"^\s*<\d{6,12}\.\d{14}@"), None),
    ("Eudora", re.compile(r"^\s*QUALCOMM Windows Eudora\b"), re.compile(r"^\s*<\d{1,2}\.\d{1,2}\.\d"), None),
    ("AOL", re.compile(r"^\s*AOL \d{1,2}\.\d for (?:Windows|Mac)\b"),
     re.compile(r"@(?:[a-z0-9-]+\.)?(?:aol|cs)\.com>\s*$", re.IGNORECASE), None),
    ("Exchange IMS", re.compile(r"^\s*Internet Mail Service\b"), re.compile(r"^\s*<[0-9A-F]{16,48}@"), None),
    ("eGroups poster", re.compile(r"^\s*eGroups Message Poster"),
     re.compile(r"@(?:[a-z0-9-]+\.)*(?:egroups|yahoo)\.com>\s*$", re.IGNORECASE), None),
)
_RANDOM_TOKEN = re.compile(r"^\s*[A-Za-z0-9]{14,40}\s*$")


def filetime_high_to_unix(high_hex: str) -> float:
    """Seconds since 1970 of a FILETIME whose high 32 bits are `high_hex` (low bits taken as zero)."""
    return (int(high_hex, 16) << 32) / 10_000_000 - _FILETIME_EPOCH


def _date_seconds(view: MessageView) -> float | None:
    parsed = parse_date(view.header("Date", "raw") or "")
    if parsed is None:
        return None
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def _skew(high_hex: str, view: MessageView, args: tuple[str, ...]) -> EvalResult:
    try:
        max_days = float(args[0]) if args else DEFAULT_MAX_DAYS
    except ValueError:
        max_days = DEFAULT_MAX_DAYS
    date = _date_seconds(view)
    if date is None:
        return 0, ""
    stamp = filetime_high_to_unix(high_hex)
    days = (stamp - date) / 86_400
    if abs(days) <= max_days:
        return 0, ""
    try:
        when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
    except (OverflowError, ValueError, OSError):
        when = "out of range"
    return 1, f"stamp {when}, {days:+.0f} days from Date"


def check_ms_msgid_time(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """check_ms_msgid_time([max_days]): a Microsoft-style Message-ID whose time stamp is more than max_days
    away from the Date header."""
    match = _MS_MSGID.match(view.header("Message-ID", "raw") or "")
    if match is None:
        return 0, ""
    return _skew(match.group(1)[-8:], view, args)


def check_ms_boundary_time(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """check_ms_boundary_time([max_days]): the message's own (top-level) `_NextPart_` boundary carries a
    time stamp more than max_days away from the Date header. Nested parts are left alone: a forwarded
    message keeps the boundary of its own, older, sending."""
    match = _MS_BOUNDARY.search(view.header("Content-Type", "raw") or "")
    if match is None:
        return 0, ""
    return _skew(match.group(1), view, args)


def check_mailer_msgid_mismatch(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """X-Mailer names a mail program that writes its own kind of Message-ID, but the Message-ID has another
    shape."""
    mailer = view.header("X-Mailer", "raw") or ""
    msgid = (view.header("Message-ID", "raw") or "").strip()
    if not mailer or not msgid:
        return 0, ""
    for name, mailer_re, msgid_re, rewritten_re in _CLIENT_MSGIDS:
        if not mailer_re.match(mailer):
            continue
        if msgid_re.search(msgid) or (rewritten_re is not None and rewritten_re.search(msgid)):
            return 0, ""
        return 1, f"{name}: {msgid[:80]}"
    return 0, ""


def check_random_mailer(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """X-Mailer is one random-looking token (upper and lower case letters and digits, no name, no version)."""
    mailer = (view.header("X-Mailer", "raw") or "").strip()
    if not _RANDOM_TOKEN.match(mailer):
        return 0, ""
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" for c in mailer]
    runs = 1 + sum(1 for a, b in pairwise(kinds) if a != b)
    # a product name is a few words and a version ("MailEnable2000", "WebMail4Business": 5 and 7 runs of
    # one kind of character); a generated token switches between capitals, small letters and digits often
    if {"u", "l", "d"} <= set(kinds) and runs >= 8:
        return 1, mailer
    return 0, ""


EVALS = {
    "check_ms_msgid_time": check_ms_msgid_time,
    "check_ms_boundary_time": check_ms_boundary_time,
    "check_mailer_msgid_mismatch": check_mailer_msgid_mismatch,
    "check_random_mailer": check_random_mailer,
}
