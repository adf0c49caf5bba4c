"""Bayes: tokenizer, chi-square math, combining, the in-memory store; hostile input bounded."""

import math
import time

import pytest

from mailgw_libs.bayes import (
    BANDS,
    BayesFilter,
    ClassifierConfig,
    MemoryStore,
    TokenizerConfig,
    Totals,
    chi2q,
    combine,
    symbol,
    token_probability,
    tokenize_raw,
    tokenize_text,
)
from mailgw_libs.bayes.classifier import Outcome

MAIL = (b"From: \"Shop\" <deals@mail.shop.example>\r\nTo: you@example.com\r\nSubject: CHEAP watches today\r\n"
        b"Message-ID: <abc@mx.shop.example>\r\nX-Mailer: BulkMailer 5\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"Buy cheap watches at http://www.shop.example/offers/watch?id=1 now\r\n--b\r\n"
        b"Content-Type: text/html\r\n\r\n<p>Visit <a href=\"https://192.0.2.7:8080/x\">here</a>"
        b"<script>hiddenscript()</script></p>\r\n--b--\r\n")


def test_tokenizer_words_headers_urls_and_html_stripped() -> None:
    tokens = tokenize_raw(MAIL)
    assert {"buy", "cheap", "watches", "visit"} <= tokens
    assert "hiddenscript" not in tokens and "script" not in tokens          # script content is not text
    assert {"S:cheap", "S:UC:cheap", "F:shop", "F@shop.example", "XM:bulkmailer"} <= tokens
    assert {"U:shop.example", "U:www.shop.example", "UP:offers", "U:query"} <= tokens
    assert {"U:ip", "U:192.0.2.7", "U:port"} <= tokens
    assert {"MID@shop.example", "H:x-mailer", "P:text/html"} <= tokens
    assert "cheap watches" in tokens                                         # word pairs
    assert "buy" in tokenize_text("Buy now") and "now" not in tokenize_text("no")


def test_tokenizer_long_words_become_skip_tokens() -> None:
    tokens = tokenize_text("a " + "x" * 45 + " ok word")
    assert "sk:xxxx:4" in tokens and not any(len(t) > 60 for t in tokens)
    assert "word" in tokens and "ok" not in tokens                           # shorter than 3: no token


def _list_mail(list_headers: bytes, body: bytes) -> bytes:
    return (b"From: someone@example.org\r\nTo: talk@lists.example.org\r\nSubject: hello\r\n" + list_headers
            + b"Content-Type: text/plain\r\n\r\n" + body)


FOOTER = (b"Cheap pills here\r\n\r\n" + b"_" * 47 + b"\r\nTalk mailing list\r\nunsubscribe "
          b"https://lists.example.org/listinfo/talk\r\n")


def test_discussion_list_footer_is_left_out() -> None:
    tokens = tokenize_raw(_list_mail(b"List-Id: <talk.lists.example.org>\r\n", FOOTER))
    assert {"cheap", "pills"} <= tokens
    assert "unsubscribe" not in tokens and "U:lists.example.org" not in tokens and "talk" not in tokens
    assert "H:list-id" in tokens                                             # the list headers stay tokens
    html = (b"List-Post: <mailto:talk@lists.example.org>\r\nContent-Type: text/html\r\n\r\n<p>Cheap pills</p>"
            b"<p>" + b"-" * 30 + b"</p><p>unsubscribe here</p>")
    assert "unsubscribe" not in tokenize_raw(b"Subject: x\r\n" + html)
    assert "unsubscribe" in tokenize_raw(_list_mail(b"List-Id: <t.example>\r\n", FOOTER),
                                         TokenizerConfig(strip_list_footer=False))


def test_footer_kept_for_newsletters_and_separators_far_from_the_end() -> None:
    # A newsletter (List-Unsubscribe only) wrote its own footer: it is the sender's text.
    assert "unsubscribe" in tokenize_raw(_list_mail(b"List-Unsubscribe: <mailto:leave@news.example>\r\n", FOOTER))
    assert "unsubscribe" in tokenize_raw(_list_mail(b"", FOOTER))            # no list at all
    early = b"intro\r\n" + b"=" * 30 + b"\r\nunsubscribe\r\n" + b"".join(b"line %d\r\n" % i for i in range(40))
    assert "unsubscribe" in tokenize_raw(_list_mail(b"List-Id: <t.example>\r\n", early))


@pytest.mark.parametrize("body", [
    (b"_" * 47 + b"\r\n") * 200_000,                                        # nothing but separators (~10 MB)
    b"word " * 400_000 + b"\r\n" + b"-" * 1_000_000,                        # one huge line, a huge separator
    b"\r\n" * 2_000_000,
    b"-" * 19 + b"\r\n" + b"_" * 19 + b"x" * 50 + b"\r\n",
])
def test_hostile_list_footers_bounded(body: bytes) -> None:
    started = time.monotonic()
    tokens = tokenize_raw(_list_mail(b"List-Id: <t.example>\r\n", body))
    assert len(tokens) <= TokenizerConfig().max_tokens + 100
    assert time.monotonic() - started < 60                                   # hang guard, not a speed test


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\xff" * 50_000,
    b"Subject: " + b"A" * 2_000_000 + b"\r\n\r\nbody",
    b"Subject: x\r\n\r\n" + b" ".join(b"tok%d" % i for i in range(1_200_000)),   # ~10 MB of token soup
    b"Content-Type: text/html\r\n\r\n" + b"<a href=" * 200_000,
    b"X-Many: " + b"\r\n\t".join(b"fold" for _ in range(100_000)) + b"\r\n\r\nx",
    b"Subject: deep\r\n" + b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
             for i in range(3000)),
])
def test_hostile_messages_give_bounded_tokens_in_bounded_time(raw: bytes) -> None:
    started = time.monotonic()
    tokens = tokenize_raw(raw)
    assert len(tokens) <= TokenizerConfig().max_tokens + 100                # header tokens beside the cap
    assert time.monotonic() - started < 60                                   # hang guard, not a speed test


def test_chi2q_against_closed_forms() -> None:
    # dof 2: survival function is exp(-x/2); dof 4: exp(-x/2) (1 + x/2)
    for x in (0.1, 1.0, 7.5, 40.0):
        assert chi2q(x, 2) == pytest.approx(math.exp(-x / 2))
        assert chi2q(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2))
    assert chi2q(0, 10) == 1.0
    assert chi2q(2000.0, 300) == pytest.approx(0.0, abs=1e-100)
    assert 0.0 < chi2q(1900.0, 2000) <= 1.0                                  # no underflow to 0 in log space
    with pytest.raises(ValueError):
        chi2q(1.0, 3)


def test_robinson_token_probability() -> None:
    config = ClassifierConfig()
    totals = Totals(spam=100, ham=100)
    assert token_probability(0, 0, totals, config) == 0.5
    # seen once in spam only: (1 * 0.5 + 1 * 1) / (1 + 1) = 0.75
    assert token_probability(1, 0, totals, config) == pytest.approx(0.75)
    assert token_probability(50, 0, totals, config) == pytest.approx((0.5 + 50) / 51)
    # normalised by the totals: 10 of 100 spam vs 10 of 1000 ham
    assert token_probability(10, 10, Totals(100, 1000), config) == pytest.approx((0.5 + 20 * (0.1 / 0.11)) / 21)


def test_combining_direction_and_neutrality() -> None:
    config = ClassifierConfig()
    totals = Totals(spam=500, ham=500)
    spammy = {f"s{i}": (40, 0) for i in range(20)}
    hammy = {f"h{i}": (0, 40) for i in range(20)}
    assert combine(spammy, totals, config).probability > 0.99
    assert combine(hammy, totals, config).probability < 0.01
    assert combine({**spammy, **hammy}, totals, config).probability == pytest.approx(0.5, abs=0.05)
    assert combine({"weak": (3, 2)}, totals, config) == Outcome(probability=0.5, tokens_used=0)
    assert combine({f"s{i}": (40, 0) for i in range(400)}, totals, config).tokens_used == config.max_tokens


def test_symbol_bands() -> None:
    assert symbol(Outcome(0.0, 3)).name == "BAYES_00"
    assert symbol(Outcome(0.5, 3)).name == "BAYES_50"
    assert symbol(Outcome(0.9995, 3)).name == "BAYES_999"
    assert [b[0] for b in BANDS] == sorted(b[0] for b in BANDS)
    assert symbol(Outcome(0.97, 3, (("x" * 1000, 0.99),))).detail.__len__() <= 300


async def test_memory_store_learn_relearn_forget_and_minimum_training() -> None:
    store = MemoryStore()
    bayes = BayesFilter(store, ClassifierConfig(min_spam=2, min_ham=2, min_strength=0.1))
    assert await bayes.learn("m1", {"viagra", "cheap"}, "spam") == "learned"
    assert await bayes.learn("m1", {"viagra", "cheap"}, "spam") == "unchanged"
    assert await bayes.classify({"viagra"}) is None                            # 1 spam, 0 ham: untrained
    await bayes.learn("m2", {"viagra", "pills"}, "spam")
    await bayes.learn("h1", {"meeting", "agenda"}, "ham")
    await bayes.learn("h2", {"meeting", "cheap"}, "ham")
    outcome = await bayes.classify({"viagra", "pills"})
    assert outcome is not None and outcome.probability > 0.5
    assert await bayes.learn("m2", {"viagra", "pills"}, "ham") == "moved"
    totals, counts = await store.lookup({"viagra", "pills"})
    assert (totals.spam, totals.ham) == (1, 3) and counts == {"viagra": (1, 1), "pills": (0, 1)}
    assert await bayes.forget("m2", {"viagra", "pills"}) == "forgotten"
    assert await bayes.forget("m2", {"viagra", "pills"}) == "unknown"
    totals, counts = await store.lookup({"viagra", "pills"})
    assert (totals.spam, totals.ham) == (1, 2) and counts == {"viagra": (1, 0)}


async def test_memory_store_bounds_and_expires_learned_ids() -> None:
    store = MemoryStore(max_learned=2)
    for i in range(3):
        store.learn_now(f"m{i}", {"shared"}, "spam", day=100 + i)
    assert (await store.stats()).learned_messages == 2
    assert await store.forget("m0", {"shared"}) == "unknown"       # the oldest id went first
    assert store.lookup_now({"shared"})[1] == {"shared": (3, 0)}   # its counts stay
    await store.expire(max_age_days=10, max_count=0, day=112)       # m1 (day 101) is older than 10 days
    assert list(store.learned) == ["m2"] and list(store.learned_day) == ["m2"]
