"""The first antispam checks: GTUBE, header consistency, body phrases.

Each check takes the parsed message (and the raw bytes where it needs them) and
returns symbol hits; the registry in `scanner.py` runs them all.
"""

from __future__ import annotations

from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from mailgw_libs import mime, textrules
from mailgw_libs.events import SymbolHit

# The Generic Test for Unsolicited Bulk Email: a fixed string every spam filter treats as spam.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

SYMBOLS: dict[str, tuple[float, str]] = {
    "GTUBE": (1000.0, "The GTUBE test string: treat as spam"),
    "MISSING_DATE": (1.0, "No Date header"),
    "INVALID_DATE": (1.0, "Date header cannot be parsed"),
    "MISSING_MID": (0.5, "No Message-ID header"),
    "INVALID_MID": (0.5, "Message-ID is not of the form <local@domain>"),
    "MISSING_FROM": (2.0, "No From header"),
    "MISSING_SUBJECT": (0.5, "No Subject header"),
    "FROM_REPLYTO_DIFF_DOMAIN": (0.5, "Reply-To goes to a different domain than From"),
}


def hit(name: str, detail: str = "") -> SymbolHit:
    return SymbolHit(name=name, score=SYMBOLS[name][0], detail=detail[:200])


def check_gtube(raw: bytes) -> list[SymbolHit]:
    return [hit("GTUBE")] if GTUBE in raw else []


def check_date(msg: Message) -> list[SymbolHit]:
    value = mime.decoded_header(msg, "Date")
    if not value:
        return [hit("MISSING_DATE")]
    try:
        if parsedate_to_datetime(value) is None:
            return [hit("INVALID_DATE", value)]
    except (TypeError, ValueError, IndexError):
        return [hit("INVALID_DATE", value)]
    return []


def check_message_id(msg: Message) -> list[SymbolHit]:
    value = mime.decoded_header(msg, "Message-ID")
    if not value:
        return [hit("MISSING_MID")]
    if not (value.startswith("<") and value.endswith(">") and "@" in value):
        return [hit("INVALID_MID", value)]
    return []


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def check_from_and_subject(msg: Message) -> list[SymbolHit]:
    hits: list[SymbolHit] = []
    if "From" not in msg:
        hits.append(hit("MISSING_FROM"))
    if "Subject" not in msg:
        hits.append(hit("MISSING_SUBJECT"))
    return hits


def check_reply_to(msg: Message) -> list[SymbolHit]:
    if "List-Id" in msg or "List-Post" in msg:
        return []  # mailing lists set Reply-To to the list on purpose
    from_addrs = [a for _, a in getaddresses([mime.decoded_header(msg, "From")]) if a]
    reply_addrs = [a for _, a in getaddresses([mime.decoded_header(msg, "Reply-To")]) if a]
    if not from_addrs or not reply_addrs:
        return []
    from_domain = _domain(from_addrs[0])
    reply_domain = _domain(reply_addrs[0])
    if from_domain and reply_domain and not (
        reply_domain == from_domain or reply_domain.endswith("." + from_domain) or from_domain.endswith("." + reply_domain)
    ):
        return [hit("FROM_REPLYTO_DIFF_DOMAIN", f"{from_domain} -> {reply_domain}")]
    return []


def check_body_phrases(msg: Message, max_chars: int) -> list[SymbolHit]:
    return textrules.score_text(mime.body_text(msg, max_chars), max_chars)
