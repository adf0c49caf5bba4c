from pathlib import Path

import pytest

from mailgw_antispam.checks import GTUBE
from mailgw_antispam.scanner import scan

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "dev"
GOOD_HEADERS = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: lunch\r\n"
                b"Date: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <abc@example.org>\r\n")


def names(raw: bytes) -> set[str]:
    return {h.name for h in scan(raw)}


def test_clean_message_has_no_hits() -> None:
    assert scan(GOOD_HEADERS + b"\r\nSee you at noon.\r\n") == []


def test_gtube() -> None:
    hits = scan(GOOD_HEADERS + b"\r\n" + GTUBE + b"\r\n")
    assert [h.name for h in hits] == ["GTUBE"] and hits[0].score >= 1000


def test_missing_headers() -> None:
    assert {"MISSING_DATE", "MISSING_MID", "MISSING_FROM", "MISSING_SUBJECT"} <= names(b"\r\nhello\r\n")


@pytest.mark.parametrize("value", [b"yesterday", b"Mon, 99 Foo 20x"])
def test_invalid_date(value: bytes) -> None:
    raw = GOOD_HEADERS.replace(b"Mon, 2 Feb 2026 10:00:00 +0000", value) + b"\r\nx"
    assert "INVALID_DATE" in names(raw)


def test_invalid_message_id() -> None:
    assert "INVALID_MID" in names(GOOD_HEADERS.replace(b"<abc@example.org>", b"abc") + b"\r\nx")


def test_reply_to_other_domain_but_not_for_lists() -> None:
    raw = GOOD_HEADERS + b"Reply-To: collect@elsewhere.biz\r\n\r\nx"
    assert "FROM_REPLYTO_DIFF_DOMAIN" in names(raw)
    assert "FROM_REPLYTO_DIFF_DOMAIN" not in names(GOOD_HEADERS + b"Reply-To: x@sub.example.org\r\n\r\nx")
    assert "FROM_REPLYTO_DIFF_DOMAIN" not in names(b"List-Id: <l.example.net>\r\n" + raw)


def test_phrases_in_html_part_are_found() -> None:
    raw = GOOD_HEADERS + (b"Content-Type: text/html\r\n\r\n<p>Get <b>CHEAP VIAGRA</b>, order now, <i>no prescription "
                          b"needed</i>!</p>")
    assert {"PHRASE_CHEAP_MEDS", "PHRASE_NO_PRESCRIPTION", "PHRASE_ACT_NOW"} <= names(raw)


@pytest.mark.parametrize("raw", [b"", b"\x00\xff" * 100, b"Content-Type: multipart/mixed\r\n\r\n--", b"A" * 200_000])
def test_hostile_input_does_not_raise(raw: bytes) -> None:
    scan(raw)


@pytest.mark.skipif(not CORPUS.exists(), reason="dev corpus not present")
def test_no_ham_of_the_corpus_reaches_the_spam_threshold() -> None:
    scores = [sum(h.score for h in scan(p.read_bytes())) for p in sorted((CORPUS / "ham").glob("*.eml"))[:500]]
    assert len(scores) == 500
    assert max(scores) < 5.0
