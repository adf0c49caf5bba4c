from mailgw_libs.textrules import BODY_RULES, score_text


def test_spam_phrases_add_up() -> None:
    hits = score_text("CHEAP VIAGRA, no prescription needed! Limited time offer - buy now")
    names = {h.name for h in hits}
    assert {"PHRASE_PHARMA_BRANDS", "PHRASE_CHEAP_MEDS", "PHRASE_LIMITED_OFFER", "PHRASE_ACT_NOW"} <= names
    assert sum(h.score for h in hits) >= 5


def test_ordinary_text_scores_nothing() -> None:
    assert score_text("Hi team, the build is green again. Let's meet at 10 to discuss the release.") == []


def test_you_wont_is_not_you_won() -> None:
    assert score_text("I think you won't believe it") == []


def test_each_rule_once_and_no_single_rule_reaches_threshold() -> None:
    assert len({r.name for r in BODY_RULES}) == len(BODY_RULES)
    assert all(r.score < 5 for r in BODY_RULES)
    assert len(score_text("viagra viagra viagra")) == 1
