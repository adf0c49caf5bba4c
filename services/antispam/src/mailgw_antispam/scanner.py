"""Runs every antispam check on one message: GTUBE on the raw bytes, then the rule engine."""

from __future__ import annotations

from email.message import Message

from mailgw_libs.events import SymbolHit

from . import checks
from .rules import Engine, build_view, load_engine


def scan(raw: bytes, max_chars: int = 1_000_000, engine: Engine | None = None,
         msg: Message | None = None) -> list[SymbolHit]:
    """All symbol hits for the raw message. CPU-bound: call it in an executor from async code.

    `engine` defaults to our own rule set (services/antispam rules/cf), built once per process;
    `msg` is the already parsed message when the caller has it (Bayes tokenizes the same parse)."""
    hits: list[SymbolHit] = []
    if msg is None:
        msg, hits = checks.parse_or_flag(raw)
    hits += checks.check_gtube(raw)
    view = build_view(raw, max_chars, msg)
    hits += (engine or load_engine()).run(view)
    return hits
