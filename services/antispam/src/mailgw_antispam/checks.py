"""Checks that are not rules: GTUBE on the raw bytes.

The header-consistency checks and body phrases of the first version are now rules of our default
rule set (`rules/cf/*.cf`), run by the rule engine; their symbols and scores are unchanged.
"""

from __future__ import annotations

from mailgw_libs.events import SymbolHit

# The Generic Test for Unsolicited Bulk Email: a fixed string every spam filter treats as spam.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0


def check_gtube(raw: bytes) -> list[SymbolHit]:
    if GTUBE in raw:
        return [SymbolHit(name="GTUBE", score=GTUBE_SCORE, detail="The GTUBE test string: treat as spam")]
    return []
