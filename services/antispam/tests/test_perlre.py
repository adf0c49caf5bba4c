import re

import pytest

from mailgw_antispam.rules.perlre import Untranslatable, parse, split_delimited


@pytest.mark.parametrize(("perl", "text", "hit"), [
    (r"/foo\z/", b"xfoo", True),
    (r"/foo\z/", b"foo\n", False),
    (r"/foo\Z/", b"foo\n", True),
    (r"/\Afoo/", b"foo", True),
    (r"m{a/b}i", b"A/B", True),
    (r"m!x\!y!", b"x!y", True),
    (r"m#a\#b#", b"a#b", True),
    (r"/(?i)viagra/", b"VIAGRA", True),
    (r"/foo(?i)bar/", b"fooBAR", True),
    (r"/foo(?i)bar/", b"FOObar", False),
    (r"/x(?i)a|b/", b"B", True),
    (r"/(?i:ab)c/", b"ABc", True),
    (r"/a++b/", b"aaab", True),
    (r"/(?>a+)b/", b"aab", True),
    (r"/[[:alpha:]]+\d/", b"abc1", True),
    (r"/\Q1.5*\E/", b"1.5*", True),
    (r"/\Q1.5*\E/", b"125", False),
    (r"/\x{263a}/", "\u263a".encode(), True),
    (r"/\x41/", b"A", True),
    (r"/a{,3}/", b"a{,3}", True),
    (r"/(?<w>ab)\k<w>/", b"abab", True),
    (r"/(a)\g1/", b"aa", True),
    (r"/x\h+y/", b"x \ty", True),
    (r"/x\R/", b"x\r\n", True),
    (r"/[^]]+/", b"abc", True),
    (r"/a b # comment/x", b"ab", True),
    (r"/a.b/s", b"a\nb", True),
    (r"/^b/m", b"a\nb", True),
    (r"/\e/", b"\x1b", True),
    (r"/a\ b/", b"a b", True),
])
def test_translation(perl: str, text: bytes, hit: bool) -> None:
    assert bool(parse(perl).compile().search(text)) is hit


@pytest.mark.parametrize("perl", [r"/\p{L}/", r"/(?{ 1 })/", r"/a/e", r"/unterminated", r"/$var/", r"/[a-/"])
def test_untranslatable(perl: str) -> None:
    with pytest.raises(Untranslatable):
        parse(perl)


def test_split_delimited_keeps_trailing_text() -> None:
    assert split_delimited("/a/i [if-unset: x]") == ("a", "i", " [if-unset: x]")


def test_flags() -> None:
    regex = parse("/a/imsx")
    assert regex.re_flags == re.I | re.M | re.S | re.X and regex.flags == "imsx"
    assert parse("/a/go").re_flags == 0
