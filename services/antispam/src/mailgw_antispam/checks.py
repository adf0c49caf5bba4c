"""Checks that are not rules: GTUBE on the raw bytes; MIME too deep to parse.

The header-consistency checks and body phrases of the first version are now rules of our default
rule set (`rules/cf/*.cf`), run by the rule engine; their symbols and scores are unchanged.
"""

from __future__ import annotations

from email.message import Message

from mailgw_libs import mime
from mailgw_libs.events import SymbolHit

# The Generic Test for Unsolicited Bulk Email: a fixed string every spam filter treats as spam.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0


MIME_TOO_DEEP_SCORE = 3.0


def parse_or_flag(raw: bytes) -> tuple[Message, list[SymbolHit]]:
    """The parsed message; when its MIME nesting is too deep for the (recursive) stdlib parser, the
    headers alone and a MIME_TOO_DEEP hit: no legitimate mail nests hundreds of levels deep."""
    try:
        return mime.parse(raw), []
    except RecursionError:
        hit = SymbolHit(name="MIME_TOO_DEEP", score=MIME_TOO_DEEP_SCORE,
                        detail="MIME nesting too deep to parse: body not scanned")
        return mime.parse_headers_only(raw), [hit]


def check_gtube(raw: bytes) -> list[SymbolHit]:
    if GTUBE in raw:
        return [SymbolHit(name="GTUBE", score=GTUBE_SCORE, detail="The GTUBE test string: treat as spam")]
    return []
