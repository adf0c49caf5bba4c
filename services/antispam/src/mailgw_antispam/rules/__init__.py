"""A SpamAssassin-compatible rule engine: `.cf` parser, Perl regex translation, multi-pattern matching."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .engine import Engine
from .message import MessageView
from .message import build as build_view
from .parser import Problem, Rule, RuleSet, load_paths, parse_text

DEFAULT_RULES_DIR = Path(__file__).resolve().parent / "cf"
# Where Debian's `spamassassin` package puts its rules (not loaded unless configured).
DEBIAN_RULES_DIR = Path("/usr/share/spamassassin")


def load_ruleset(rule_dirs: tuple[str, ...] = (), include_default: bool = True) -> RuleSet:
    """Our default rules, then each configured directory or file (later definitions win)."""
    paths = ([DEFAULT_RULES_DIR] if include_default else []) + [Path(d) for d in rule_dirs]
    return load_paths(paths)


@lru_cache(maxsize=8)
def load_engine(rule_dirs: tuple[str, ...] = (), include_default: bool = True, use_hyperscan: bool = True,
                ok_languages: tuple[str, ...] = ("all",), cache_dir: str = "") -> Engine:
    """The engine for a rule configuration, built once per process; compiled Hyperscan databases are
    kept in `cache_dir` ("" = not kept) and loaded from there at the next start."""
    return Engine(load_ruleset(rule_dirs, include_default), use_hyperscan=use_hyperscan, ok_languages=ok_languages,
                  cache_dir=Path(cache_dir) if cache_dir else None)


__all__ = ["DEBIAN_RULES_DIR", "DEFAULT_RULES_DIR", "Engine", "MessageView", "Problem", "Rule", "RuleSet",
           "build_view", "load_engine", "load_paths", "load_ruleset", "parse_text"]
