from datetime import UTC, datetime

from mailgw_libs.events import Direction, Fate, MailReceived, SymbolHit, Verdict
from mailgw_rules.policy import DefaultPolicy, PolicyConfig, merge_symbols

POLICY = DefaultPolicy(PolicyConfig(5.0, 10.0, "[SPAM]", {"antivirus": "quarantine", "ocr": "ignore"}))
SCORERS = ["antispam", "antivirus", "ocr"]
ENV = MailReceived(message_id="M1", received_at=datetime(2026, 1, 1, tzinfo=UTC), client_ip="192.0.2.1",
                   mail_from="s@example.org", rcpt_tos=["a@example.com", "b@example.com"],
                   direction=Direction.INBOUND, size=10, subject="hello")


def verdict(scorer: str, *hits: tuple[str, float], viruses: list[str] | None = None, failed: bool = False) -> Verdict:
    return Verdict.of("M1", scorer, [SymbolHit(name=n, score=s) for n, s in hits], 1.0, viruses, failed)


def all_verdicts(*spam_hits: tuple[str, float]) -> dict[str, Verdict]:
    return {"antispam": verdict("antispam", *spam_hits), "antivirus": verdict("antivirus"), "ocr": verdict("ocr")}


def test_ham_is_accepted_without_spam_headers() -> None:
    action = POLICY.decide(ENV, all_verdicts(("MISSING_DATE", 1.0)), SCORERS)
    assert [d.fate for d in action.decisions] == [Fate.ACCEPT, Fate.ACCEPT]
    assert all(not d.add_headers and not d.subject_tag and not d.spam for d in action.decisions)
    assert "X-Spam-Flag" in action.decisions[0].remove_headers
    assert action.missing_scorers == []


def test_score_5_tags() -> None:
    action = POLICY.decide(ENV, all_verdicts(("A", 3.0), ("B", 2.0)), SCORERS)
    d = action.decisions[0]
    assert d.fate is Fate.ACCEPT and d.spam and d.subject_tag == "[SPAM]"
    headers = {h.name: h.value for h in d.add_headers}
    assert headers == {"X-Spam-Flag": "YES", "X-Spam-Score": "5.00", "X-Spam-Symbols": "A,B"}


def test_score_10_quarantines() -> None:
    action = POLICY.decide(ENV, all_verdicts(("GTUBE", 1000.0)), SCORERS)
    assert {d.fate for d in action.decisions} == {Fate.QUARANTINE}
    assert action.decisions[0].quarantine_kind == "spam"


def test_virus_blocks_even_when_spam() -> None:
    verdicts = all_verdicts(("GTUBE", 1000.0))
    verdicts["antivirus"] = verdict("antivirus", ("AV_VIRUS", 1000.0), viruses=["Eicar-Test"])
    action = POLICY.decide(ENV, verdicts, SCORERS)
    assert {d.fate for d in action.decisions} == {Fate.BLOCK}
    assert action.viruses == ["Eicar-Test"] and action.decisions[0].rule == "block-virus"


def test_missing_antivirus_quarantines_missing_ocr_is_ignored() -> None:
    verdicts = all_verdicts()
    del verdicts["antivirus"]
    action = POLICY.decide(ENV, verdicts, SCORERS)
    assert action.decisions[0].fate is Fate.QUARANTINE and action.decisions[0].quarantine_kind == "unscanned"
    assert action.missing_scorers == ["antivirus"]
    verdicts = all_verdicts()
    del verdicts["ocr"]
    action = POLICY.decide(ENV, verdicts, SCORERS)
    assert action.decisions[0].fate is Fate.ACCEPT and action.missing_scorers == ["ocr"]


def test_failed_antivirus_quarantines() -> None:
    verdicts = all_verdicts()
    verdicts["antivirus"] = verdict("antivirus", ("AV_FAIL", 0.0), failed=True)
    action = POLICY.decide(ENV, verdicts, SCORERS)
    assert action.decisions[0].fate is Fate.QUARANTINE and action.failed_scorers == ["antivirus"]


def test_same_symbol_from_two_scorers_counts_once() -> None:
    merged = merge_symbols([verdict("antispam", ("PHRASE_X", 2.0)), verdict("ocr", ("PHRASE_X", 2.5), ("Y", 1.0))])
    assert [(h.name, h.score) for h in merged] == [("PHRASE_X", 2.5), ("Y", 1.0)]
