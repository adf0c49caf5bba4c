from pathlib import Path

import pytest

from mailgw_antispam.rules import load_paths, parse_text
from mailgw_antispam.rules.parser import eval_condition


def test_every_directive() -> None:
    rs = parse_text(r"""
# a comment
header   H1   Subject =~ /viagra/i   # trailing comment
header   H2   From:addr !~ m{\@example\.org$}
header   H3   exists:X-Mailer
header   H4   ALL =~ /^X-Spam: yes/m
header   H5   Subject =~ /^$/ [if-unset: EMPTY]
header   H6   eval:check_date_invalid()
body     B1   /cheap\s+pills/i
body     B2   eval:check_link_text_mismatch()
rawbody  R1   m!<font size=0>!i
uri      U1   /^https?:\/\/\d+\.\d+\.\d+\.\d+/
full     F1   /^Received: from evil/m
meta     M1   (H1 && B1) || (U1 + R1 >= 2)
mimeheader MH1 Content-Type =~ /application\/x-msdownload/
score    H1   2.5 2.0 1.0 0.5
score    B1   1
describe H1   Subject names a drug
tflags   B1   multiple maxhits=3 nice
tflags   H2   net learn userconf
priority M1   500
lang fr describe H1 Sujet
freemail_domains example.net
body     C1   /a \# b/
    """, "t.cf")
    assert not rs.problems and not rs.unsupported
    r = rs.rules
    assert r["H1"].header == "Subject" and r["H1"].regex is not None and r["H1"].regex.re_flags
    assert r["H2"].negate and r["H2"].modifier == "addr" and r["H2"].regex is not None
    assert r["H2"].regex.python == rb"\@example\.org$"
    assert r["H3"].exists and r["H3"].header == "X-Mailer"
    assert r["H4"].header == "ALL"
    assert r["H5"].if_unset == "EMPTY"
    assert r["H6"].eval_name == "check_date_invalid" and r["B2"].kind == "body"
    assert r["R1"].kind == "rawbody" and r["U1"].kind == "uri" and r["F1"].kind == "full"
    assert r["M1"].meta is not None and r["M1"].meta.deps == {"H1", "B1", "U1", "R1"}
    assert r["MH1"].kind == "mimeheader"
    assert rs.score("H1") == 2.5  # score set 0
    assert rs.score("B1") == 1.0 and rs.score("H3") == 1.0 and rs.score("__X") == 0.0 and rs.score("T_X") == 0.01
    assert rs.describe("H1") == "Subject names a drug"
    assert rs.tflags["B1"] == {"multiple", "maxhits=3", "nice"} and rs.maxhits("B1") == 3
    assert {"net", "learn", "userconf"} <= rs.tflags["H2"]
    assert rs.priorities["M1"] == 500
    assert rs.ignored["lang"] == 1 and rs.ignored["freemail_domains"] == 1
    assert r["C1"].regex is not None and r["C1"].regex.python == b"a # b"


def test_nice_rules_default_to_negative_score() -> None:
    rs = parse_text("header N exists:List-Id\ntflags N nice\n")
    assert rs.score("N") == -1.0


def test_malformed_lines_are_collected_with_file_and_line() -> None:
    rs = parse_text("""header GOOD Subject =~ /ok/
header
body BAD1 no-slashes
score GOOD x
meta BAD2 (A &&
header BAD3 Subject ~= /x/
body 9BAD /x/
%weird line
endif
body GOOD2 /fine/
    """, "bad.cf")
    assert set(rs.rules) == {"GOOD", "GOOD2"}
    lines = sorted(p.line for p in rs.problems)
    assert lines == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all(str(p).startswith(f"bad.cf:{p.line}: ") for p in rs.problems)


def test_untranslatable_regex_is_unsupported_not_a_crash() -> None:
    rs = parse_text("body U /\\p{Lu}{5}/\nbody V /(?{ code })/\nbody OK /x/\n", "u.cf")
    assert set(rs.rules) == {"OK"}
    assert [(p.rule, p.line) for p in rs.unsupported] == [("U", 1), ("V", 2)]
    assert str(rs.unsupported[0]).startswith("u.cf:1: U: regex")


def test_no_continuation_lines_as_in_spamassassin() -> None:
    # SpamAssassin has no continuation lines: an indented line is its own setting.
    rs = parse_text("body A /one/\n   body B /two/\n")
    assert set(rs.rules) == {"A", "B"}


def test_if_ifplugin_else_endif() -> None:
    rs = parse_text("""
ifplugin Mail::SpamAssassin::Plugin::HeaderEval
body P1 /emulated/
endif
ifplugin Mail::SpamAssassin::Plugin::Razor2
body P2 /absent/
else
body P3 /else-branch/
endif
if (version >= 3.004000)
body V1 /new-enough/
if !plugin(Mail::SpamAssassin::Plugin::DCC)
body V2 /nested/
endif
endif
if (version > 9.0)
body V3 /too-new/
endif
if can(Mail::SpamAssassin::Conf::feature_unknown)
body C1 /feature/
endif
    """)
    assert set(rs.rules) == {"P1", "P3", "V1", "V2"}
    assert not rs.problems


def test_conditions() -> None:
    assert eval_condition("(version >= 3.004002) && plugin(Mail::SpamAssassin::Plugin::BodyEval)")
    assert not eval_condition("!plugin(Mail::SpamAssassin::Plugin::MIMEHeader)")
    assert eval_condition("perl_version >= 5.010")


def test_include_and_directory_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inc.cf").write_text("body INC /included/\n")
    (tmp_path / "20_b.cf").write_text("include sub/inc.cf\nscore A 3\ninclude missing.cf\n")
    (tmp_path / "10_a.cf").write_text("body A /a/\nscore A 1\n")
    (tmp_path / "notes.txt").write_text("body IGNORED /x/\n")
    rs = load_paths([tmp_path])
    assert set(rs.rules) == {"A", "INC"} and rs.score("A") == 3  # later file wins
    assert [p.line for p in rs.problems] == [3] and "missing.cf" in rs.problems[0].message


@pytest.mark.parametrize("text", ["if (version >= \n", "if\nendif\n", "ifplugin Foo\n"])
def test_bad_conditionals_are_reported(text: str) -> None:
    assert parse_text(text).problems
