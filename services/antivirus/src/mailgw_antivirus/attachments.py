"""Layer 2 of the antivirus service: the attachment policy and YARA over every part and archive member.

`AttachmentPolicy.scan(raw)` walks every MIME leaf part (`mailgw_libs.mime.leaf_parts`) and,
recursively, every archive member up to `max_depth`, all under one `archives.Budget` (unpacked
bytes, members, time). Each finding is a symbol declared once in `SYMBOLS` (default score and
description); settings may change a score or make a symbol a hard "virus" finding, whose name
then joins `Verdict.viruses`. The walk is CPU work: async code calls `scan_async`, which runs it
in a worker thread with a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from mailgw_libs import mime
from mailgw_libs.events import ArchiveMember, AttachmentInfo, SymbolHit

from . import archives, documents, filetypes
from .archives import Budget, Limits, StopScan
from .filetypes import FileType, Name
from .yara_rules import YaraHit, YaraRules

log = logging.getLogger("mailgw.antivirus.attachments")

VIRUS_SCORE = 1000.0
VIRUS_PREFIX = "Mailgw."


@dataclass(frozen=True)
class SymbolDef:
    name: str
    score: float
    description: str


SYMBOLS: dict[str, SymbolDef] = {s.name: s for s in (
    SymbolDef("MIME_EXECUTABLE", 5.0, "an attachment is a program by content (PE, ELF, Mach-O, MSI)"),
    SymbolDef("MIME_DOUBLE_EXTENSION", 6.0,
              "a decoy extension before a dangerous one (invoice.pdf.exe), or bidi controls in a file name"),
    SymbolDef("MIME_BAD_EXTENSION", 4.0, "an attachment with a dangerous extension (exe, scr, js, vbs, hta, lnk, iso...)"),
    SymbolDef("MIME_EXT_MISMATCH", 5.0,
              "the extension promises a harmless type, the content is a program, an archive or HTML"),
    SymbolDef("ARCHIVE_EXECUTABLE", 4.0, "a program or script inside an archive"),
    SymbolDef("ARCHIVE_ENCRYPTED", 3.0, "an encrypted archive (or member) that cannot be scanned"),
    SymbolDef("ARCHIVE_TOO_DEEP", 3.0, "archives nested deeper than the configured depth"),
    SymbolDef("ARCHIVE_BOMB", 6.0, "an archive that unpacks beyond the ratio or the per-message byte budget"),
    SymbolDef("ARCHIVE_TOO_MANY_FILES", 3.0, "more archive members than the configured maximum"),
    SymbolDef("ARCHIVE_CORRUPT", 1.0, "an archive that cannot be read (truncated or corrupt)"),
    SymbolDef("OFFICE_MACRO", 4.0, "an Office document with VBA macros"),
    SymbolDef("PDF_JAVASCRIPT", 4.0, "a PDF with JavaScript or a launch action"),
    SymbolDef("SCAN_TIMEOUT", 2.0, "the attachment scan ran out of time: the message was not fully inspected"),
)}


@dataclass(frozen=True)
class PolicyConfig:
    limits: Limits = field(default_factory=Limits)
    max_depth: int = 5
    timeout_s: float = 10.0
    max_parts: int = 1000
    pdf_max_stream_bytes: int = 8 * 1024 * 1024
    # Archive members listed per part in the inventory (Verdict.attachments); all are still scanned.
    max_listed_members: int = 1000
    # Per symbol (layer-2 and YARA_<RULE> names): a score replacing the default, or a hard virus.
    scores: dict[str, float] = field(default_factory=dict)
    virus_symbols: frozenset[str] = frozenset()
    yara_default_score: float = 5.0


@dataclass(frozen=True)
class Layer2Result:
    hits: tuple[SymbolHit, ...] = ()
    viruses: tuple[str, ...] = ()
    # False when the walk did not finish (time out, internal error): such a verdict is not cached.
    complete: bool = True
    error: str = ""
    # Every leaf part (index = position in mime.leaf_parts order) with its archive members.
    attachments: tuple[AttachmentInfo, ...] = ()


@dataclass
class _PartInventory:
    """What the walk learnt about one leaf part; becomes an AttachmentInfo."""

    index: int
    filename: str
    declared_type: str
    detected_type: str
    size: int
    members: list[ArchiveMember] = field(default_factory=list)
    limit: int = 1000

    def add_member(self, name: str, content_type: str) -> None:
        if len(self.members) < self.limit:
            self.members.append(ArchiveMember(name=name[:500], content_type=content_type))

    def info(self) -> AttachmentInfo:
        return AttachmentInfo(part_index=self.index, filename=self.filename[:500], declared_type=self.declared_type,
                              detected_type=self.detected_type, size=self.size, archive_members=self.members)


class _Findings:
    def __init__(self) -> None:
        self.details: dict[str, list[str]] = {}
        self.yara: dict[str, YaraHit] = {}
        self.inventory: list[_PartInventory] = []

    def add(self, symbol: str, detail: str) -> None:
        details = self.details.setdefault(symbol, [])
        if detail not in details and len(details) < 20:
            details.append(detail)


def _declared_family(name: Name | None, content_type: str) -> str:
    if name is not None and name.extension in filetypes.EXTENSION_FAMILIES:
        return filetypes.EXTENSION_FAMILIES[name.extension]
    if name is None or not name.extensions:
        if content_type.startswith("image/"):
            return filetypes.IMAGE
        if content_type == "application/pdf":
            return filetypes.PDF
    return ""


def _mismatch(declared: str, found: FileType) -> bool:
    """The dangerous disagreements between what a name (or content type) promises and the content."""
    if not declared or declared == found.family:
        return False
    if found.family == filetypes.EXECUTABLE:
        return declared != filetypes.EXECUTABLE
    if declared in (filetypes.IMAGE, filetypes.PDF):
        return found.family in (filetypes.ARCHIVE, filetypes.HTML, filetypes.OFFICE, filetypes.SCRIPT)
    if declared == filetypes.TEXT:
        return found.family in (filetypes.ARCHIVE, filetypes.OFFICE)
    return False


def _double_extension(name: Name) -> str:
    if name.bidi:
        return f"{name.clean!r}: bidi control characters in the name"
    exts = name.extensions
    if len(exts) >= 2 and exts[-1] in filetypes.BAD_EXTENSIONS and exts[-2] in filetypes.DECOY_EXTENSIONS:
        return f"{name.clean!r}: .{exts[-2]} before .{exts[-1]}"
    return ""


class AttachmentPolicy:
    def __init__(self, config: PolicyConfig | None = None, yara_rules: YaraRules | None = None) -> None:
        self.config = config or PolicyConfig()
        self.yara = yara_rules

    def fingerprint(self) -> str:
        """Changes whenever a setting or rule that could change a verdict changes (cache key part)."""
        c = self.config
        state = {
            "limits": vars(c.limits), "depth": c.max_depth, "parts": c.max_parts, "pdf": c.pdf_max_stream_bytes,
            "listed": c.max_listed_members,
            "scores": sorted(c.scores.items()), "virus": sorted(c.virus_symbols), "yara_score": c.yara_default_score,
            "yara": self.yara.fingerprint if self.yara is not None else "",
            "symbols": sorted((s.name, s.score) for s in SYMBOLS.values()),
        }
        return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # --- the walk ------------------------------------------------------------------------------

    def scan(self, raw: bytes) -> Layer2Result:
        """Blocking: the layer-2 findings of one raw message. Never raises."""
        budget = Budget(self.config.limits, time.monotonic() + self.config.timeout_s)
        found = _Findings()
        complete, error = True, ""
        try:
            parts = mime.leaf_parts(mime.parse(raw), self.config.max_parts)
            # The inventory first, so that every part is listed even when a limit stops the walk.
            for index, part in enumerate(parts):
                name = filetypes.parse_name(part.filename) if part.filename else None
                found.inventory.append(_PartInventory(
                    index, name.clean if name is not None else "", part.content_type,
                    filetypes.sniff(part.payload).content_type, len(part.payload),
                    limit=self.config.max_listed_members))
            for index, part in enumerate(parts):
                name = filetypes.parse_name(part.filename) if part.filename else None
                where = name.clean if name is not None else f"part {index + 1} ({part.content_type})"
                self._inspect(part.payload, name, part.content_type, where, 0, False, budget, found,
                              found.inventory[index], "")
        except StopScan as stop:
            found.add(stop.symbol, stop.detail)
            complete = stop.symbol != archives.TIMEOUT
        except Exception as exc:  # a bug or a library failure must not lose the clamd verdict
            log.exception("attachment scan failed")
            complete, error = False, f"attachment scan failed: {type(exc).__name__}: {exc}"
        return self._result(found, complete, error)

    async def scan_async(self, raw: bytes) -> Layer2Result:
        try:
            # The walk checks its own deadline; this one only guards against a library that hangs.
            return await asyncio.wait_for(asyncio.to_thread(self.scan, raw), self.config.timeout_s + 5.0)
        except TimeoutError:
            found = _Findings()
            found.add(archives.TIMEOUT, f"no answer within {self.config.timeout_s + 5.0:g} s")
            return self._result(found, False, "")

    def _inspect(self, data: bytes, name: Name | None, content_type: str, where: str, depth: int,
                 in_archive: bool, budget: Budget, found: _Findings, part: _PartInventory, inner: str) -> None:
        """`part` is the leaf part being walked, `inner` the path of `data` inside it ('' = the part itself)."""
        budget.check_time()
        kind = filetypes.sniff(data)
        if inner:
            part.add_member(inner, kind.content_type)
        if name is not None:
            trick = _double_extension(name)
            if trick:
                found.add("MIME_DOUBLE_EXTENSION", trick)
        if in_archive:
            if kind.executable or kind.family == filetypes.SCRIPT or (
                    name is not None and name.extension in filetypes.BAD_EXTENSIONS | filetypes.SCRIPT_EXTENSIONS):
                found.add("ARCHIVE_EXECUTABLE", f"{where} ({kind.label})")
        else:
            if kind.executable:
                found.add("MIME_EXECUTABLE", f"{where}: {kind.label}")
            if name is not None and name.extension in filetypes.BAD_EXTENSIONS:
                found.add("MIME_BAD_EXTENSION", f"{name.clean!r}")
            if _mismatch(_declared_family(name, content_type), kind):
                found.add("MIME_EXT_MISMATCH", f"{where}: named {name.extension if name else content_type}, "
                                               f"is {kind.label}")
        if kind.kind == "ole" and documents.ole_has_macros(data):
            found.add("OFFICE_MACRO", where)
        elif kind.kind == "pdf":
            for what in documents.pdf_active_content(data, budget, max_stream_bytes=self.config.pdf_max_stream_bytes):
                found.add("PDF_JAVASCRIPT", f"{where}: {what}")
        self._yara(data, where, budget, found)
        if kind.kind in filetypes.ARCHIVE_KINDS:
            if depth >= self.config.max_depth:
                found.add("ARCHIVE_TOO_DEEP", f"{where}: archive at depth {depth + 1}, "
                                              f"more than {self.config.max_depth} levels")
                return
            self._archive(data, kind, where, depth, budget, found, part, inner)

    def _archive(self, data: bytes, kind: FileType, where: str, depth: int, budget: Budget, found: _Findings,
                 part: _PartInventory, inner: str) -> None:
        members = archives.members(kind.kind, data, where, budget)
        while True:
            try:
                member = next(members)
            except StopIteration:
                return
            except StopScan:
                raise
            except Exception as exc:  # noqa: BLE001 - archive libraries raise anything on hostile input
                found.add("ARCHIVE_CORRUPT", f"{where}: {type(exc).__name__}: {str(exc)[:120]}")
                return
            path = f"{where}/{member.name}"
            inner_path = f"{inner}/{member.name}" if inner else member.name
            name = filetypes.parse_name(member.name)
            if kind.kind == "ooxml" and name.clean.lower() == "vbaproject.bin":
                found.add("OFFICE_MACRO", f"{where}: {member.name}")
            if member.encrypted:
                found.add("ARCHIVE_ENCRYPTED", path)
            if member.bomb:
                found.add("ARCHIVE_BOMB", f"{path}: {member.bomb}")
            if member.data is None:
                part.add_member(inner_path, "")  # not unpacked: no type by content
                # Not unpacked: the name is all there is to judge.
                trick = _double_extension(name)
                if trick:
                    found.add("MIME_DOUBLE_EXTENSION", trick)
                if name.extension in filetypes.BAD_EXTENSIONS | filetypes.SCRIPT_EXTENSIONS:
                    found.add("ARCHIVE_EXECUTABLE", f"{path} (by name)")
                continue
            self._inspect(member.data, name, "", path, depth + 1, True, budget, found, part, inner_path)

    def _yara(self, data: bytes, where: str, budget: Budget, found: _Findings) -> None:
        if self.yara is None:
            return
        try:
            hits = self.yara.match(data, budget.deadline - time.monotonic())
        except Exception as exc:  # yara.Error / yara.TimeoutError
            if time.monotonic() > budget.deadline:
                raise StopScan(archives.TIMEOUT, f"YARA on {where}: {exc}") from exc
            log.warning("YARA match failed", extra={"where": where, "error": repr(exc)})
            return
        for hit in hits:
            found.yara[hit.symbol] = hit
            found.add(hit.symbol, f"{where}" + (f": {hit.description}" if hit.description else ""))

    # --- symbols -------------------------------------------------------------------------------

    def weight(self, symbol: str, yara_hit: YaraHit | None = None) -> tuple[float, bool]:
        """(score, virus) of a symbol: settings first, then the rule's meta or the declared default."""
        virus = symbol in self.config.virus_symbols or (yara_hit is not None and yara_hit.virus)
        if symbol in self.config.scores:
            return self.config.scores[symbol], virus
        if yara_hit is not None:
            return (yara_hit.score if yara_hit.score is not None else self.config.yara_default_score), virus
        definition = SYMBOLS.get(symbol)
        return (definition.score if definition is not None else 0.0), virus

    def _result(self, found: _Findings, complete: bool, error: str) -> Layer2Result:
        hits: list[SymbolHit] = []
        viruses: list[str] = []
        for symbol, details in found.details.items():
            score, virus = self.weight(symbol, found.yara.get(symbol))
            if virus:
                viruses.append(VIRUS_PREFIX + symbol)
                score = VIRUS_SCORE
            hits.append(SymbolHit(name=symbol, score=score, detail="; ".join(details)[:500]))
        return Layer2Result(tuple(hits), tuple(viruses), complete, error, tuple(p.info() for p in found.inventory))
