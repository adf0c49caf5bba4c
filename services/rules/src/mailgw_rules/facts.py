"""What the rules look at, gathered once per message: envelope, headers, parts, merged scan results."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from mailgw_libs import mime
from mailgw_libs.events import HeaderChange, MailReceived, SymbolHit, Verdict

MAX_PARTS = 1000
MAX_HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class PartFacts:
    index: int  # position in mime.leaf_parts order (what delivery's attachment removal uses)
    filename: str
    content_types: tuple[str, ...]  # declared and, when known, detected by content
    archive_names: tuple[str, ...] = ()
    archive_types: tuple[str, ...] = ()


@dataclass
class MessageFacts:
    envelope: MailReceived
    score: float
    symbols: list[SymbolHit]
    viruses: list[str]
    parts: list[PartFacts]
    headers: Message
    scorer_headers: list[HeaderChange] = field(default_factory=list)

    @property
    def symbol_names(self) -> frozenset[str]:
        return frozenset(h.name.lower() for h in self.symbols)

    def header_values(self, name: str) -> list[str]:
        try:
            values = self.headers.get_all(name) or []
        except (ValueError, TypeError, LookupError):
            return []
        return [str(v) for v in values]


def merge_symbols(verdicts: list[Verdict]) -> list[SymbolHit]:
    """One hit per symbol name (the highest score wins), highest score first.

    The same symbol from two scorers (a phrase in the text and in an image) counts once.
    """
    best: dict[str, SymbolHit] = {}
    for verdict in verdicts:
        for hit in verdict.symbols:
            if hit.name not in best or hit.score > best[hit.name].score:
                best[hit.name] = hit
    return sorted(best.values(), key=lambda h: (-h.score, h.name))


def _parts_from_verdicts(verdicts: list[Verdict]) -> list[PartFacts] | None:
    """The antivirus layer's inventory (content-detected types, archive members), if a scorer sent one."""
    for verdict in verdicts:
        if verdict.attachments:
            return [PartFacts(
                index=a.part_index, filename=a.filename,
                content_types=tuple(t.lower() for t in (a.declared_type, a.detected_type) if t),
                archive_names=tuple(m.name for m in a.archive_members),
                archive_types=tuple(m.content_type.lower() for m in a.archive_members if m.content_type),
            ) for a in verdict.attachments[:MAX_PARTS]]
    return None


def _parts_from_message(raw: bytes) -> list[PartFacts]:
    parts = mime.leaf_parts(mime.parse(raw), max_parts=MAX_PARTS)
    return [PartFacts(index=i, filename=p.filename, content_types=(p.content_type,)) for i, p in enumerate(parts)]


def gather(envelope: MailReceived, raw: bytes, verdicts: list[Verdict], need_parts: bool) -> MessageFacts:
    """CPU work (MIME parsing): run in a worker thread."""
    symbols = merge_symbols(verdicts)
    parts = _parts_from_verdicts(verdicts)
    if parts is None:
        parts = _parts_from_message(raw) if need_parts else []
    scorer_headers: list[HeaderChange] = []
    for verdict in sorted(verdicts, key=lambda v: v.scorer):
        scorer_headers.extend(verdict.add_headers)
    return MessageFacts(
        envelope=envelope,
        score=round(sum(h.score for h in symbols), 3),
        symbols=symbols,
        viruses=sorted({name for v in verdicts for name in v.viruses}),
        parts=parts,
        headers=mime.parse_headers_only(raw, MAX_HEADER_BYTES),
        scorer_headers=scorer_headers,
    )
