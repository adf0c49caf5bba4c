"""`analyse` tokenizes the text the rules decoded: the same tokens as tokenizing the message on its own (plus the
rule names), and bounded on hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgw_antispam.bayes import analyse, analyse_for_learning
from mailgw_antispam.rules import load_engine
from mailgw_libs import mime
from mailgw_libs.bayes import DecodedPart, TokenizerConfig, tokenize, tokenize_decoded

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "dev"
CONFIG = TokenizerConfig()


def _corpus_sample() -> list[Path]:
    return sorted((CORPUS / "ham").glob("*.eml"))[:40] + sorted((CORPUS / "spam").glob("*.eml"))[:40]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="dev corpus not present")
def test_tokens_from_the_rules_view_equal_tokens_of_the_message() -> None:
    engine = load_engine()
    for path in _corpus_sample():
        raw = path.read_bytes()
        analysis = analyse(raw, 1_000_000, engine, CONFIG)
        rule_names = {t for t in analysis.tokens if t.startswith("R:")}
        assert rule_names == {"R:" + h.name for h in analysis.hits}, path.name
        assert analysis.tokens - rule_names == tokenize(mime.parse(raw), CONFIG), path.name
        assert analyse_for_learning(raw, CONFIG, engine) == (analysis.tokens, analysis.key)


def test_decoded_parts_visible_text_is_used_and_bounded() -> None:
    msg = mime.parse(b"Subject: x\r\n\r\nbody\r\n")
    html = "<p>" + "<b>bargain</b> " * 50 + "</p>"
    tokens = tokenize_decoded(msg, ["text/html"], [DecodedPart("text/html", html, "given visible text")], CONFIG)
    assert {"given", "visible", "tag:b", "P:text/html"} <= tokens and "bargain" not in tokens
    derived = tokenize_decoded(msg, ["text/html"], [DecodedPart("text/html", html)], CONFIG)
    assert "bargain" in derived


def test_hostile_parts_stay_bounded() -> None:
    msg = mime.parse(b"Subject: x\r\n\r\nbody\r\n")
    huge = " ".join(f"w{i}x" for i in range(300_000))           # far beyond max_chars and max_tokens
    parts = [DecodedPart("text/plain", huge)] * 500
    tokens = tokenize_decoded(msg, ["text/plain"] * 10_000, parts, CONFIG)
    assert len(tokens) <= CONFIG.max_tokens + 300                # header tokens and part types beside the cap
    nasty = DecodedPart("text/html", "<a href=" + "x" * 1_000_000 + "<" * 100_000, None)
    assert tokenize_decoded(msg, ["text/html"], [nasty], CONFIG)  # no crash, some tokens


def test_many_parts_and_broken_encodings_through_analyse() -> None:
    parts = "".join(f"--b\r\nContent-Type: text/html; charset=x-unknown\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    f"PGI+{i}!!!not base64\r\n" for i in range(400))
    raw = (f"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{parts}--b--\r\n").encode()
    analysis = analyse(raw, 1_000_000, load_engine(), CONFIG)
    assert len(analysis.tokens) <= CONFIG.max_tokens + 400
