"""The eval checks of the default rule set: MIME structure, HTML tricks, links, charsets, language,
header consistency and Hashcash, each through the rule that uses it (scan with our default rules)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgw_antispam.rules import build_view, load_engine
from mailgw_antispam.rules.headerchecks import hashcash_bits
from mailgw_antispam.rules.htmltricks import analyse_html, parse_colour
from mailgw_antispam.rules.language import check_language_not_ok, detect_language
from mailgw_antispam.rules.message import fingerprint
from mailgw_antispam.rules.uris import registered_domain
from mailgw_antispam.scanner import scan

HEAD = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
        b"Date: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <abc@example.org>\r\nMIME-Version: 1.0\r\n")
TEXT = b"We met at the conference last week and talked about the schedule for the next release of the tool."


def names(raw: bytes) -> set[str]:
    return {h.name for h in scan(raw)}


def html_mail(body: str, plain: str | None = None) -> bytes:
    if plain is None:
        return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n"
    return (HEAD + b"Content-Type: multipart/alternative; boundary=zz\r\n\r\n"
            b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + plain.encode() + b"\r\n"
            b"--zz\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n--zz--\r\n")


# --- MIME structure ----------------------------------------------------------------------------

def test_fingerprint_of_the_part_tree() -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
           b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\nx\r\n"
           b"--i\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--i--\r\n--o\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-1.4\r\n--o--\r\n")
    view = build_view(raw)
    assert fingerprint(view.nodes) == "multipart/mixed(multipart/alternative(text/plain,text/html),application/pdf[att])"
    assert view.header("MIMETREE") == fingerprint(view.nodes) + "\n"


def test_image_only_mail() -> None:
    png = base64.encodebytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    raw = (HEAD + b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n"
           b'<html><body><img src="cid:a"></body></html>\r\n--r\r\nContent-Type: image/png\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\n" + png + b"--r--\r\n")
    found = names(raw)
    assert {"MGW_MIME_IMAGE_ONLY", "MGW_TREE_HTML_IMG", "MGW_HTML_IMAGE_TEXTLESS"} <= found


def test_attachment_only_and_no_text() -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: application/zip\r\n"
           b"Content-Disposition: attachment; filename=invoice.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(b"PK\x03\x04" + b"\0" * 40) + b"--m--\r\n")
    assert {"MGW_MIME_ATTACH_ONLY", "MGW_MIME_NO_TEXT"} <= names(raw)


def test_empty_body() -> None:
    assert "MGW_MIME_EMPTY" in names(HEAD + b"Content-Type: text/plain\r\n\r\n\r\n")
    assert "MGW_MIME_EMPTY" not in names(HEAD + b"Content-Type: text/plain\r\n\r\n" + TEXT + b"\r\n")


def test_html_only_and_alternative_mismatch() -> None:
    assert "MGW_MIME_HTML_ONLY" in names(html_mail("<p>" + TEXT.decode() + "</p>"))
    decoy = ("Quarterly gardening notes: tomatoes, peppers, basil and onions need water in summer months "
             "and compost twice a season for healthy leaves and roots.")
    advert = ("Cheap watches replica luxury brands discount shipping worldwide order today special price "
              "limited stock customers satisfied guaranteed delivery fast secure payment.")
    found = names(html_mail("<p>" + advert + "</p>", plain=decoy))
    assert "MGW_MIME_ALT_MISMATCH" in found
    same = names(html_mail("<p>" + decoy + "</p>", plain=decoy))
    assert "MGW_MIME_ALT_MISMATCH" not in same and "MGW_MIME_HTML_ONLY" not in same


def test_declared_type_contradicts_name_or_content() -> None:
    def part(ctype: bytes, name: bytes, data: bytes) -> bytes:
        return (HEAD + b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\n"
                + TEXT + b"\r\n--m\r\nContent-Type: " + ctype + b"\r\nContent-Disposition: attachment; filename="
                + name + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(data) + b"--m--\r\n")

    assert "MGW_MIME_TYPE_MISMATCH" in names(part(b"image/jpeg", b"photo.jpg", b"MZ\x90\x00" + b"\0" * 60))
    assert "MGW_MIME_TYPE_MISMATCH" in names(part(b"text/plain", b"readme.exe", b"MZ" + b"\0" * 60))
    assert "MGW_MIME_TYPE_MISMATCH" not in names(part(b"image/jpeg", b"photo.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 60))


def test_broken_transfer_encodings_and_boundaries() -> None:
    b64 = HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8*#!!\r\n"
    assert "MGW_MIME_BAD_ENCODING" in names(b64)
    qp = HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=ZZ b=QQ c=XY d\r\n"
    assert "MGW_MIME_BAD_ENCODING" in names(qp)
    unknown = HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base65\r\n\r\n" + TEXT + b"\r\n"
    assert "MGW_MIME_UNKNOWN_CTE" in names(unknown)
    no_end = HEAD + b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    assert "MGW_MIME_BOUNDARY_BROKEN" in names(no_end)


# --- HTML tricks -------------------------------------------------------------------------------

def test_colour_parsing() -> None:
    assert parse_colour("#fff") == (255, 255, 255)
    assert parse_colour("rgb(1, 2, 3)") == (1, 2, 3)
    assert parse_colour("White") == (255, 255, 255)
    assert parse_colour("nonsense") is None


def test_invisible_tiny_hidden_text() -> None:
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
    visible = "<p>Buy our product today</p>"
    invisible = names(html_mail(visible + f'<font color="#ffffff">{words}</font>'))
    assert "HTML_INVISIBLE_TEXT" in invisible
    # white text on a dark background is visible
    dark = names(html_mail(f'<table bgcolor="#000000"><tr><td><font color="white">{words}</font></td></tr></table>'))
    assert "HTML_INVISIBLE_TEXT" not in dark
    assert "MGW_HTML_TINY_TEXT" in names(html_mail(visible + f'<span style="font-size:1px">{words}</span>'))
    assert "MGW_HTML_HIDDEN_TEXT" in names(html_mail(visible + f'<div style="display:none">{words}</div>'))
    facts = analyse_html(build_view(html_mail(visible + f'<div style="visibility: hidden">{words}</div>')))
    assert facts.hidden_chars > 50 and facts.visible_chars < 30


def test_zero_width_and_obfuscated_words() -> None:
    assert "MGW_ZERO_WIDTH" in names(html_mail("<p>V\u200bi\u200ba\u200bg\u200bra and mo&#8203;ney</p>"))
    assert "MGW_OBFUSCATED_WORD" in names(HEAD + b"\r\nGet your V1AGRA and c-a-s-i-n-o bonus\r\n")
    assert "MGW_OBFUSCATED_WORD" not in names(HEAD + b"\r\nversion 1.2.3 for x86_64 and mp3 files\r\n")
    assert "MGW_OBFUSCATED_WORD" in names(HEAD + "Content-Type: text/plain; charset=utf-8\r\n\r\nBuy vïagra\r\n".encode())
    assert "MGW_SPACED_SPAM_WORD" in names(HEAD + b"\r\nBuy V I A G R A or c.a.s.i.n.o chips\r\n")
    assert "MGW_SPACED_SPAM_WORD" not in names(HEAD + b"\r\nPlan A B C D for the casino trip\r\n")


# --- links ---------------------------------------------------------------------------------

def test_registered_domain_uses_the_public_suffix_list() -> None:
    assert registered_domain("www.mail.example.co.uk") == "example.co.uk"
    assert registered_domain("a.b.example.com") == "example.com"
    assert registered_domain("192.0.2.1") == "192.0.2.1"


@pytest.mark.parametrize(("html", "symbol"), [
    ('<a href="http://3627734401/">home</a>', "MGW_URI_NUMERIC_HOST"),
    ('<a href="http://0xd8.0x3a.0xd6.0xce/">home</a>', "MGW_URI_NUMERIC_HOST"),
    ('<a href="http://xn--pypal-4ve.com/login">paypal</a>', "MGW_URI_LOOKALIKE"),
    ('<a href="http://evil.example/">https://www.mybank.com/</a>', "MGW_URI_SCHEME_MISMATCH"),
    ('<a href="javascript:go()">https://www.mybank.com/</a>', "MGW_URI_SCHEME_MISMATCH"),
    ('<a href="https://login.evil.example/">https://www.mybank.com/</a>', "MGW_PHISH_DOMAIN_MISMATCH"),
    ('<a href="data:text/html;base64,PGgxPmhpPC9oMT4=">open</a>', "MGW_URI_DATA_LINK"),
    ('<a href="http://www.paypal.com.secure.account.verify.evil.example/">x</a>', "MGW_URI_DEEP_SUBDOMAIN"),
    ('<a href="http://bank.example@198.51.100.7/">x</a>', "MGW_URI_USERINFO"),
])
def test_link_tricks(html: str, symbol: str) -> None:
    assert symbol in names(html_mail(f"<p>{TEXT.decode()} {html}</p>"))


def test_honest_links_do_not_hit() -> None:
    found = names(html_mail(f'<p>{TEXT.decode()} <a href="https://www.example.com/a">https://example.com/a</a> '
                            '<a href="https://docs.example.co.uk/">see the docs</a></p>', plain=TEXT.decode()))
    assert not {n for n in found if n.startswith(("MGW_URI", "MGW_PHISH"))}


# --- charsets and language ----------------------------------------------------------------

def test_charset_checks() -> None:
    unknown = HEAD + b"Content-Type: text/plain; charset=x-klingon-9\r\n\r\n" + TEXT + b"\r\n"
    assert "MGW_CHARSET_UNKNOWN" in names(unknown)
    bad_utf8 = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT + b" \xff\xfe\xfa ok " + TEXT + b"\r\n"
    assert "MGW_CHARSET_BAD_UTF8" in names(bad_utf8)
    latin_is_utf8 = (HEAD + b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
                     + "Grüße aus Köln, schöne Grüße".encode() + b"\r\n")
    assert "MGW_CHARSET_LATIN_IS_UTF8" in names(latin_is_utf8)
    header = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: =?x-unknown-cs?B?aGVsbG8=?=\r\n\r\n" + TEXT)
    assert "MGW_HDR_CHARSET_UNKNOWN" in names(header)


def test_language_detection_and_ok_languages() -> None:
    german = ("Sehr geehrte Damen und Herren, wir freuen uns, Ihnen heute unser neues Angebot vorzustellen. "
              "Bitte lesen Sie die beigefügten Unterlagen sorgfältig durch und melden Sie sich bei Fragen.")
    detected = detect_language(german)
    assert detected is not None and detected[0] == "de"
    assert detect_language("too short") is None
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + german.encode() + b"\r\n"
    assert check_language_not_ok(build_view(raw), ())[0] == 0  # default: every language is fine
    assert check_language_not_ok(build_view(raw, ok_languages=("en", "fr")), ())[0] == 1
    assert check_language_not_ok(build_view(raw, ok_languages=("en", "de")), ())[0] == 0
    engine = load_engine()
    hit_names = {h.name for h in engine.run(build_view(raw, ok_languages=("en",)))}
    assert "MGW_LANG_NOT_OK" in hit_names


# --- headers and Hashcash -------------------------------------------------------------------

def mint(resource: str, bits: int, date: str) -> str:
    counter = 0
    while True:
        stamp = f"1:{bits}:{date}:{resource}::c2FsdA==:{counter:x}"
        digest = int.from_bytes(hashlib.sha1(stamp.encode()).digest(), "big")
        if 160 - digest.bit_length() >= bits:
            return stamp
        counter += 1


def test_hashcash_stamp_validation() -> None:
    now = datetime(2026, 2, 2, tzinfo=UTC)
    stamp = mint("bob@example.com", 12, "260201")
    assert hashcash_bits(stamp, {"bob@example.com"}, now) == 12
    assert hashcash_bits(stamp, {"carol@example.com"}, now) == 0          # not for this recipient
    assert hashcash_bits(stamp, {"bob@example.com"}, datetime(2026, 6, 1, tzinfo=UTC)) == 0  # too old
    forged = stamp.replace("1:12:", "1:30:")
    assert hashcash_bits(forged, {"bob@example.com"}, now) == 0          # claims more work than done
    assert hashcash_bits("garbage:::", {"bob@example.com"}, now) == 0


def test_hashcash_rules() -> None:
    raw = (HEAD.replace(b"Date: Mon, 2 Feb 2026 10:00:00 +0000\r\n", b"")
           + b"Date: " + datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000").encode() + b"\r\n"
           + b"X-Hashcash: " + mint("bob@example.com", 20, datetime.now(UTC).strftime("%y%m%d")).encode()
           + b"\r\n\r\n" + TEXT + b"\r\n")
    hits = {h.name: h.score for h in scan(raw)}
    assert hits.get("MGW_HASHCASH_20", 0) < 0 and "MGW_HASHCASH_INVALID" not in hits
    bad = HEAD + b"X-Hashcash: 1:20:260201:bob@example.com::x:0\r\n\r\n" + TEXT + b"\r\n"
    assert "MGW_HASHCASH_INVALID" in names(bad)


def test_header_consistency_evals() -> None:
    cdo = HEAD + b"X-Mailer: Microsoft CDO for Windows 2000\r\n\r\n" + TEXT + b"\r\n"
    assert "MGW_XMAILER_CDO" in names(cdo)
    clean = names(HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT + b"\r\n")
    assert clean == set()


# --- Hyperscan database cache -----------------------------------------------------------------

def test_hyperscan_database_cached_on_disk(tmp_path: Path) -> None:
    from mailgw_antispam.rules import Engine, load_ruleset
    from mailgw_antispam.rules.matcher import HYPERSCAN_AVAILABLE

    if not HYPERSCAN_AVAILABLE:
        pytest.skip("hyperscan not installed")
    ruleset = load_ruleset()
    raw = html_mail('<p>Buy now! <a href="http://3627734401/">click here to order</a></p>')
    compiled = Engine(ruleset, cache_dir=tmp_path)
    assert not compiled.from_cache and list(tmp_path.glob("*.hsdb"))
    loaded = Engine(ruleset, cache_dir=tmp_path)
    assert loaded.from_cache and loaded.accelerated
    no_cache = Engine(ruleset)
    expected = sorted((h.name, h.score) for h in no_cache.run(build_view(raw)))
    assert sorted((h.name, h.score) for h in loaded.run(build_view(raw))) == expected
    for path in tmp_path.glob("*.hsdb"):  # a damaged cache file is recompiled, not trusted
        path.write_bytes(b"[]\ngarbage")
    repaired = Engine(ruleset, cache_dir=tmp_path)
    assert not repaired.from_cache
    assert sorted((h.name, h.score) for h in repaired.run(build_view(raw))) == expected
    # another rule set gets another database
    smaller = load_ruleset()
    smaller.rules.pop(next(n for n, r in smaller.rules.items() if r.kind == "body" and r.regex is not None))
    assert not Engine(smaller, cache_dir=tmp_path).from_cache


def test_shortener_by_registered_domain() -> None:
    assert "MGW_URI_SHORTENER" in names(html_mail(f'<p>{TEXT.decode()} <a href="https://bit.ly/x">x</a></p>'))
    assert "MGW_URI_SHORTENER" in names(HEAD + b"\r\n" + TEXT + b" http://www.tinyurl.com/abc\r\n")
    assert "MGW_URI_SHORTENER" not in names(HEAD + b"\r\n" + TEXT + b" http://bit.ly.example.com/abc\r\n")


# --- padding, hash busters, undeclared 8-bit text, borrowed Message-IDs ------------------------------

def test_blank_line_padding_in_plain_text_only() -> None:
    padded = HEAD + b"\r\n" + TEXT + b"\r\n" + b"\r\n" * 25 + b"unsubscribe footer\r\n"
    assert "MGW_TEXT_BLANK_PADDING" in names(padded)
    assert "MGW_TEXT_BLANK_PADDING" not in names(HEAD + b"\r\n" + TEXT + b"\r\n" * 10 + b"bye\r\n")
    # blank lines in HTML source do not show, so they are not padding
    assert "MGW_TEXT_BLANK_PADDING" not in names(html_mail("<p>hi</p>" + "\n" * 40 + "<p>bye</p>"))


def test_hash_buster_line() -> None:
    assert "MGW_HASHBUSTER_LINE" in names(HEAD + b"\r\n" + TEXT + b"\r\n\r\ngcoakgwnibgafjecarccjbjiiqlluijse\r\n")
    assert "MGW_HASHBUSTER_LINE" not in names(HEAD + b"\r\n" + TEXT + b"\r\n\r\nregards\r\n")
    # a long word inside a sentence is not a line of its own
    assert "MGW_HASHBUSTER_LINE" not in names(HEAD + b"\r\nsee supercalifragilisticexpialidocious here\r\n")


def test_8bit_text_without_charset_needs_a_real_amount() -> None:
    turkish = "Artık tüm haberleri sadece tek siteden takip edebileceksiniz. Sağlık, kültür ve sanat. " * 8
    undeclared = HEAD + b"Content-Type: text/plain\r\n\r\n" + turkish.encode("cp1254") + b"\r\n"
    assert "MGW_8BIT_UNDECLARED" in names(undeclared)
    declared = HEAD + b"Content-Type: text/plain; charset=windows-1254\r\n\r\n" + turkish.encode("cp1254")
    assert "MGW_8BIT_UNDECLARED" not in names(declared)
    # a name with two accents in an otherwise ASCII mail is a careless mailer, not evidence
    stray = HEAD + b"Content-Type: text/plain\r\n\r\n" + TEXT * 3 + " Ren\xe9e M\xfcller".encode("latin-1")
    assert "MGW_8BIT_UNDECLARED" not in names(stray)


@pytest.mark.parametrize(("sender", "to", "msgid", "hit"), [
    ("dwftan@earthlink.com", "Friend@webnote.net", "<200208250144.CAA18619@webnote.net>", True),
    ("x@t-online.de", "list@lists.example.net", "<vewaeurtngep@lists.example.net>", True),
    ("alice@example.org", "bob@example.com", "<abc@example.org>", False),
    # one organisation: a subdomain of the recipient's domain sends
    ("news@example.com", "customers@mail.example.com", "<x1@mail.example.com>", False),
    ("alice@example.com", "bob@example.com", "<x1@example.com>", False),
    ("alice@example.org", "bob@example.com", "not a message id", False),
])
def test_message_id_made_at_the_recipients_domain(sender: str, to: str, msgid: str, hit: bool) -> None:
    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: hello\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\n"
           f"Message-ID: {msgid}\r\n\r\n").encode() + TEXT + b"\r\n"
    assert ("MGW_MSGID_RCPT_DOMAIN" in names(raw)) is hit


def test_reply_to_a_foreign_free_mailbox() -> None:
    raw = (b"From: Anna <manaqxh@abptrade.com.br>\r\nReply-To: <letmego@bk.ru>\r\nTo: bob@example.com\r\n"
           b"Subject: hi\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <a@abptrade.com.br>\r\n\r\n"
           + TEXT + b"\r\n")
    assert "MGW_REPLYTO_FREEMAIL_DIFF" in names(raw)
    assert "MGW_REPLYTO_FREEMAIL_DIFF" not in names(raw.replace(b"letmego@bk.ru", b"anna@abptrade.com.br"))


def test_newsletter_unsubscribe_header_is_a_small_ham_sign() -> None:
    newsletter = (HEAD + b"List-Unsubscribe: <mailto:leave-news@example.org>, <https://example.org/u?x=1>\r\n\r\n"
                  + TEXT + b"\r\n")
    hits = {h.name: h.score for h in scan(newsletter)}
    assert hits.get("MGW_NEWSLETTER_UNSUB", 0) < 0
    # a discussion list (List-Id) is not a newsletter; a header without a URI is nothing
    assert "MGW_NEWSLETTER_UNSUB" not in names(newsletter.replace(b"List-Unsubscribe", b"List-Id: <n.example.org>\r\n"
                                                                                       b"List-Unsubscribe"))
    assert "MGW_NEWSLETTER_UNSUB" not in names(HEAD + b"List-Unsubscribe: please write to us\r\n\r\n" + TEXT)
