"""The first policy: virus -> block, spam score >= 10 -> quarantine, >= 5 -> tag, else accept.

Decides once per message for every recipient; the action carries a decision per
recipient so that the rule system (a later issue) can split recipients.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgw_libs.events import (
    Fate,
    HeaderChange,
    MailAction,
    MailReceived,
    RecipientDecision,
    SymbolHit,
    Verdict,
    utcnow,
)

# Headers a sender could forge to look already scanned: always removed before delivery.
SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Symbols", "X-Spam-Status", "X-Spam-Level")


def merge_symbols(verdicts: list[Verdict]) -> list[SymbolHit]:
    """One hit per symbol name (the highest score wins), highest score first.

    The same symbol from two scorers (a phrase in the text and in an image) counts once.
    """
    best: dict[str, SymbolHit] = {}
    for verdict in verdicts:
        for hit in verdict.symbols:
            if hit.name not in best or hit.score > best[hit.name].score:
                best[hit.name] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.name))


@dataclass(frozen=True)
class PolicyConfig:
    spam_tag_score: float
    spam_quarantine_score: float
    subject_tag: str
    on_missing: dict[str, str]


class DefaultPolicy:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    def decide(self, envelope: MailReceived, verdicts: dict[str, Verdict], expected: list[str]) -> MailAction:
        missing = [s for s in expected if s not in verdicts]
        failed = [s for s, v in verdicts.items() if v.failed]
        symbols = merge_symbols(list(verdicts.values()))
        viruses = sorted({name for v in verdicts.values() for name in v.viruses})
        score = round(sum(h.score for h in symbols), 3)
        unscanned = [s for s in missing + failed if self.config.on_missing.get(s, "ignore") == "quarantine"]

        fate, rule, kind, spam = Fate.ACCEPT, "accept", "", False
        add: list[HeaderChange] = []
        tag = ""
        if viruses:
            fate, rule = Fate.BLOCK, "block-virus"
        elif unscanned:
            fate, rule, kind = Fate.QUARANTINE, "quarantine-unscanned:" + ",".join(sorted(unscanned)), "unscanned"
        elif score >= self.config.spam_quarantine_score:
            fate, rule, kind, spam = Fate.QUARANTINE, f"quarantine-spam>={self.config.spam_quarantine_score:g}", "spam", True
        elif score >= self.config.spam_tag_score:
            fate, rule, spam = Fate.ACCEPT, f"tag-spam>={self.config.spam_tag_score:g}", True
            add = [
                HeaderChange(name="X-Spam-Flag", value="YES"),
                HeaderChange(name="X-Spam-Score", value=f"{score:.2f}"),
                HeaderChange(name="X-Spam-Symbols", value=",".join(h.name for h in symbols)[:900]),
            ]
            tag = self.config.subject_tag
        decisions = [
            RecipientDecision(recipient=rcpt, fate=fate, rule=rule, spam=spam, quarantine_kind=kind,
                              add_headers=add, subject_tag=tag, remove_headers=list(SPAM_HEADERS))
            for rcpt in envelope.rcpt_tos
        ]
        return MailAction(
            message_id=envelope.message_id, decided_at=utcnow(), received_at=envelope.received_at,
            mail_from=envelope.mail_from, direction=envelope.direction, client_ip=envelope.client_ip,
            subject=envelope.subject, score=score, symbols=symbols, viruses=viruses,
            missing_scorers=missing, failed_scorers=sorted(failed), decisions=decisions,
        )
