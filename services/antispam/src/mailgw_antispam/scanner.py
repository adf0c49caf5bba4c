"""Runs every antispam check on one message."""

from __future__ import annotations

from mailgw_libs import mime
from mailgw_libs.events import SymbolHit

from . import checks


def scan(raw: bytes, max_chars: int = 1_000_000) -> list[SymbolHit]:
    """All symbol hits for the raw message. CPU-bound: call it in an executor from async code."""
    msg = mime.parse(raw)
    hits: list[SymbolHit] = []
    hits += checks.check_gtube(raw)
    hits += checks.check_date(msg)
    hits += checks.check_message_id(msg)
    hits += checks.check_from_and_subject(msg)
    hits += checks.check_reply_to(msg)
    hits += checks.check_body_phrases(msg, max_chars)
    return hits
