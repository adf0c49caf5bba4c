"""The rule-system model: invalid configurations are refused with readable errors; hostile patterns are safe."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from mailgw_libs.config.rulesystem import RuleSystemConfig, compile_pattern

from .support import config

GOOD = """
who: {W: {objects: [{type: email, address: a@b.org}]}}
what: {S: {objects: [{type: spam_level, level: 3}]}}
when: {T: {objects: [{type: timeframe, start: '08:00', end: '16:00'}]}}
actions: {Block: {objects: [{type: block}]}}
rules: [{name: R, priority: 50, from: [W], what: [S], when: [T], actions: [Block]}]
"""


def refused(text: str) -> str:
    with pytest.raises((ValidationError, ValueError)) as err:
        RuleSystemConfig.from_yaml(text)
    return str(err.value)


def test_good_config_parses_and_round_trips() -> None:
    parsed = RuleSystemConfig.from_yaml(GOOD)
    assert parsed.rules[0].from_ == ["W"]
    dumped = parsed.model_dump(mode="json", by_alias=True)
    assert RuleSystemConfig.model_validate(dumped) == parsed


@pytest.mark.parametrize(("change", "message"), [
    (("type: email, address: a@b.org", "type: regex, pattern: '(a'"), "invalid regular expression"),
    (("[S]", "[Nope]"), "unknown what group(s) ['Nope']"),
    (("from: [W]", "from: [Missing]"), "unknown who group(s) ['Missing']"),
    (("actions: [Block]}]", "actions: [Blok]}]"), "unknown actions group(s) ['Blok']"),
    (("type: email, address: a@b.org", "type: network, network: 10.0.0.1/8"), "no host bits set"),
    (("type: email, address: a@b.org", "type: network, network: 10.0.0.0/33"), "not an IP network"),
    (("type: email, address: a@b.org", "type: ip, address: 300.1.1.1"), "ip"),
    (("type: email, address: a@b.org", "type: email, address: nobody"), "not an e-mail address"),
    (("end: '16:00'", "end: '08:00'"), "time frame is empty"),
    (("end: '16:00'", "end: '25:00'"), "time"),
    (("start: '08:00'", "start: '08:00', timezone: Mars/Olympus"), "unknown time zone"),
    (("start: '08:00'", "start: '08:00', days: [funday]"), "days"),
    (("priority: 50", "priority: 101"), "less than or equal to 100"),
    (("type: block", "type: explode"), "type"),
    (("name: R,", "name: R, colour: red,"), "colour"),
    (("type: spam_level, level: 3", "type: spam_level, level: -1"), "greater than or equal to 0"),
    (("{type: block}", "{type: notify, to: [admin], template: ''}"), "at least 1 character"),
    (("{type: block}", "{type: notify, to: [admin], template: '" + "t" * 129 + "'}"), "at most 128 characters"),
    (("{type: block}", "{type: notify, to: [admin], template: [a, b]}"), "template"),
])
def test_invalid_configs_are_refused_readably(change: tuple[str, str], message: str) -> None:
    old, new = change
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    assert message in refused(text)


def test_duplicates_and_two_finals_refused() -> None:
    assert "two rules are named 'R'" in refused(GOOD.replace("rules: [", "rules: [{name: R, priority: 1, actions: [Block]}, "))
    two = GOOD.replace("{Block: {objects: [{type: block}]}}", "{Block: {objects: [{type: block}, {type: accept}]}}")
    assert "at most one final action" in refused(two)


@pytest.mark.parametrize("text", ["", "rules: 5", "[1, 2]", "who: {W: {objects: [{type: email}]}}", "{{{",
                                  "!!python/object:os.system {}", "a: &x [*x]"])
def test_malformed_yaml_is_refused_or_empty(text: str) -> None:
    if text == "":
        assert RuleSystemConfig.from_yaml(text).rules == []
        return
    refused(text)


def test_oversized_input_is_bounded() -> None:
    assert "pattern longer than" in refused(GOOD.replace(
        "type: email, address: a@b.org", "type: regex, pattern: '" + "a" * 5000 + "'"))
    # A pattern that compiles to a huge program is refused, not built.
    assert "invalid regular expression" in refused(GOOD.replace(
        "type: email, address: a@b.org", "type: regex, pattern: '((((a{100}){100}){100}){100})'"))
    many = ", ".join("{type: email, address: a@b.org}" for _ in range(10_001))
    assert "at most 10000" in refused(GOOD.replace("{type: email, address: a@b.org}", many))


def test_redos_patterns_are_rejected_or_linear() -> None:
    with pytest.raises(ValueError, match="no backreferences or lookaround"):
        compile_pattern(r"(a+)\1")
    with pytest.raises(ValueError):
        compile_pattern(r"(?=a)a")
    evil = compile_pattern(r"(a+)+$")
    started = time.perf_counter()
    assert evil.search("a" * 200_000 + "!") is None
    # Catastrophic backtracking would take ages; RE2 is linear (generous bound: shared, slow CI machines).
    assert time.perf_counter() - started < 5


def test_shipped_defaults_load() -> None:
    cfg = RuleSystemConfig.defaults()
    assert cfg.rules and config("rules: []").rules == []


def test_ldap_profiles_used() -> None:
    cfg = config("who: {S: {objects: [{type: ldap_group, profile: corp, group: staff}, {type: ldap_user, profile: hr}]}}")
    assert cfg.ldap_profiles_used() == {"corp", "hr"}
