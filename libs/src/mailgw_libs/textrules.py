"""Body phrase rules shared by antispam (message text) and OCR (text read from images).

Each rule is a symbol with a score and a one-line description; the regexes are
compiled once. Scores are set so that one phrase alone never makes a message spam
(threshold 5): only several independent spam signals together do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .events import SymbolHit


@dataclass(frozen=True)
class PhraseRule:
    name: str
    pattern: str
    score: float
    description: str

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


BODY_RULES: tuple[PhraseRule, ...] = (
    PhraseRule("PHRASE_PHARMA_BRANDS", r"\b(?:viagra|cialis|levitra|phentermine|xanax|valium)\b", 2.5,
               "Names a drug sold by pharmacy spam"),
    PhraseRule("PHRASE_NO_PRESCRIPTION", r"\bno\s+(?:doctor'?s?\s+)?prescription\s+(?:needed|required)?", 2.0,
               "Offers medicine without prescription"),
    PhraseRule("PHRASE_CHEAP_MEDS", r"\bcheap\s+(?:meds|pills|pharmacy|drugs|viagra|cialis)\b", 2.0,
               "Cheap medicine offer"),
    PhraseRule("PHRASE_ONLINE_PHARMACY", r"\b(?:online|canadian)\s+(?:pharmacy|drugstore)\b", 1.5,
               "Online pharmacy"),
    PhraseRule("PHRASE_LIMITED_OFFER", r"\blimited[\s-]+time\s+(?:offer|only|deal)\b", 1.5,
               "Pressure: limited-time offer"),
    PhraseRule("PHRASE_ACT_NOW", r"\b(?:act|order|buy|call)\s+now\b", 1.2,
               "Pressure: act now"),
    PhraseRule("PHRASE_CLICK_HERE", r"\bclick\s+(?:here|below)\b", 0.5,
               "Asks to click a link"),
    PhraseRule("PHRASE_GUARANTEE", r"\b100\s?%\s+(?:guaranteed|free|satisfaction|legal|risk[\s-]free)\b", 1.2,
               "Absolute guarantee"),
    PhraseRule("PHRASE_YOU_WON", r"\byou(?:'ve|\s+have)?\s+(?:won(?!')|been\s+selected|are\s+a\s+winner)\b", 2.0,
               "Tells the reader they won"),
    PhraseRule("PHRASE_CLAIM_PRIZE", r"\bclaim\s+your\s+(?:prize|reward|winnings|gift)\b", 2.0,
               "Claim a prize"),
    PhraseRule("PHRASE_ADVANCE_FEE", r"\b(?:next\s+of\s+kin|(?:us\s*)?\$?\d+(?:[.,]\d+)?\s*million\s+(?:us\s+)?dollars|"
               r"transfer\s+(?:of\s+)?(?:the\s+)?funds?\s+(?:into|to)\s+your\s+account)\b", 2.0,
               "Advance-fee fraud wording"),
    PhraseRule("PHRASE_WORK_FROM_HOME", r"\b(?:work|earn\s+(?:money|cash|\$\d+))\s+(?:from|at)\s+home\b", 1.5,
               "Work-from-home offer"),
    PhraseRule("PHRASE_FREE_MONEY", r"\b(?:free\s+(?:money|cash|grant\s+money)|cash\s+bonus|extra\s+income)\b", 1.5,
               "Free money"),
    PhraseRule("PHRASE_DEBT_RELIEF", r"\b(?:eliminate|consolidate|reduce)\s+(?:all\s+)?(?:your\s+)?(?:credit\s+card\s+)?debts?\b",
               1.3, "Debt relief offer"),
    PhraseRule("PHRASE_MORTGAGE_RATE", r"\b(?:lower|reduce)\s+your\s+(?:mortgage|monthly\s+payments?)\b", 1.3,
               "Mortgage refinancing offer"),
    PhraseRule("PHRASE_BULK_EMAIL", r"\bmillions?\s+of\s+(?:e-?mail\s+)?(?:addresses|e-?mails)\b", 2.0,
               "Sells bulk e-mail"),
    PhraseRule("PHRASE_REMOVE_LIST",
               r"\b(?:to\s+be\s+)?removed?\s+from\s+(?:our|this|future)\s+(?:mailing\s+)?(?:list|mailings)\b", 0.8,
               "Bulk-mail removal instructions"),
    PhraseRule("PHRASE_NOT_SPAM", r"\b(?:this\s+is\s+not\s+(?:a\s+)?spam|not\s+unsolicited)\b", 1.5,
               "Claims not to be spam"),
    PhraseRule("PHRASE_RISK_FREE", r"\brisk[\s-]free\b", 0.8, "Risk-free claim"),
    PhraseRule("PHRASE_WEIGHT_LOSS", r"\b(?:lose|losing)\s+(?:up\s+to\s+)?\d+\s*(?:lbs?|pounds|kg)\b", 1.5,
               "Weight-loss promise"),
    PhraseRule("PHRASE_MEET_SINGLES", r"\b(?:hot|lonely|local)\s+(?:singles|girls|women)\b", 1.5,
               "Dating spam"),
    PhraseRule("PHRASE_CASINO", r"\b(?:online\s+casino|free\s+spins|casino\s+bonus)\b", 1.5,
               "Gambling offer"),
    PhraseRule("PHRASE_VERIFY_ACCOUNT",
               r"\b(?:verify|confirm|update)\s+your\s+(?:account|password|billing|banking)\s*(?:details|information|info)?\b",
               1.0, "Asks to verify account details"),
    PhraseRule("PHRASE_ACCOUNT_SUSPENDED",
               r"\byour\s+account\s+(?:has\s+been|will\s+be)\s+(?:suspended|locked|closed|terminated)\b", 1.5,
               "Threatens account suspension"),
)

_COMPILED: tuple[tuple[PhraseRule, re.Pattern[str]], ...] = tuple((r, r.compiled()) for r in BODY_RULES)


def score_text(text: str, max_chars: int = 1_000_000) -> list[SymbolHit]:
    """Symbol hits of the body rules on `text` (each rule counts once, with the first match as detail)."""
    sample = text[:max_chars]
    hits: list[SymbolHit] = []
    for rule, regex in _COMPILED:
        match = regex.search(sample)
        if match:
            hits.append(SymbolHit(name=rule.name, score=rule.score, detail=match.group(0)[:80]))
    return hits
