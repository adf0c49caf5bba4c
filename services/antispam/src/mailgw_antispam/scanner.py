"""Runs every antispam check on one message: GTUBE on the raw bytes, then the rule engine."""

from __future__ import annotations

from email.message import Message

from mailgw_libs.events import SymbolHit

from . import checks
from .rules import Engine, MessageView, build_view, load_engine


def scan(raw: bytes, max_chars: int = 1_000_000, engine: Engine | None = None,
         msg: Message | None = None) -> list[SymbolHit]:
    """All symbol hits for the raw message. CPU-bound: call it in an executor from async code.

    `engine` defaults to our own rule set (services/antispam rules/cf), built once per process;
    `msg` is the already parsed message when the caller has it (Bayes tokenizes the same parse)."""
    if msg is None:
        msg, hits = checks.parse_or_flag(raw)
        return hits + scan_view(raw, msg, max_chars, engine)[0]
    return scan_view(raw, msg, max_chars, engine)[0]


def scan_view(raw: bytes, msg: Message, max_chars: int = 1_000_000,
              engine: Engine | None = None) -> tuple[list[SymbolHit], MessageView]:
    """The hits of GTUBE and the rules on a parsed message, and the view the rules saw (its decoded texts
    serve the Bayes tokenizer, so that a message is decoded and HTML-stripped once)."""
    hits = checks.check_gtube(raw)
    view = build_view(raw, max_chars, msg)
    hits += (engine or load_engine()).run(view)
    return hits, view
