"""Multi-pattern matching: which patterns of a set can match a list of text chunks, in one pass.

`PatternSet(patterns).candidates(chunks)` returns the ids of the patterns that may match one of the
chunks. With Hyperscan (PyPI `hyperscan`) the chunks are joined by "\\n" and scanned once by one
compiled database of all the patterns that Hyperscan takes (exactly, or with `HS_FLAG_PREFILTER`, which
over-approximates). Hyperscan gets each pattern with its anchors (`^ $ \\A \\Z \\z`) removed: dropping a
zero-width assertion only widens what a pattern matches, so a pattern anchored in one chunk still matches
in the joined buffer, and we do not depend on Hyperscan's multi-line `$` (which missed matches that
`re` finds, e.g. before a trailing newline after a long comment). The answer is a superset: the engine
confirms every candidate with Python `re` on each chunk (which also gives the match text and hit count), so both paths give the
same hits. Patterns Hyperscan cannot take (or that match the empty string once unanchored) are always
candidates. Without Hyperscan every pattern is a candidate: the `re` path.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import platform
import re
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_hs: Any
try:  # optional accelerator
    import hyperscan as _hs
except ImportError:  # pragma: no cover - the wheel installs on our platforms
    _hs = None

HYPERSCAN_AVAILABLE = _hs is not None
log = logging.getLogger(__name__)
CACHE_FORMAT = 1


def _hyperscan_version() -> str:
    try:
        return metadata.version("hyperscan")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_key(chosen: Sequence[tuple[int, bytes, int]]) -> str:
    """Names a compiled database: the patterns, ids and flags given to Hyperscan, its version, the CPU
    architecture and our cache format. Any change in the rule set gives another key."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{_hyperscan_version()}|{platform.machine()}|".encode())
    for pid, expression, flags in chosen:
        digest.update(b"%d\0%d\0%d\0" % (pid, flags, len(expression)) + expression)
    return digest.hexdigest()


def _load_cached(path: Path) -> tuple[Any, list[tuple[int, bytes, int]]] | None:
    """(database, the patterns it holds) from a cache file, or None (absent, stale or unreadable)."""
    assert _hs is not None
    try:
        data = path.read_bytes()
        head, _, blob = data.partition(b"\n")
        kept = [(int(pid), b"", int(flags)) for pid, flags in json.loads(head)]
        return _hs.loadb(blob, _hs.HS_MODE_BLOCK), kept
    except (OSError, ValueError, TypeError, _hs.error) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("hyperscan cache %s unusable (%s): compiling", path, exc)
        return None


def _store_cached(path: Path, db: Any, kept: Sequence[tuple[int, bytes, int]]) -> None:
    assert _hs is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(json.dumps([[pid, flags] for pid, _, flags in kept]).encode() + b"\n" + _hs.dumpb(db))
        tmp.replace(path)  # atomic: a process starting meanwhile sees the old file or the new one
    except (OSError, _hs.error) as exc:
        log.warning("hyperscan cache %s not written: %s", path, exc)


def strip_anchors(pattern: bytes) -> bytes:
    """The pattern without `^`, `$`, `\\A`, `\\Z`, `\\z` outside character classes (a superset of it)."""
    out = bytearray()
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i:i + 1]
        if c == b"\\":
            pair = pattern[i:i + 2]
            if not in_class and pair in (b"\\A", b"\\Z", b"\\z"):
                i += 2
                continue
            out += pair
            i += 2
            continue
        if in_class:
            if c == b"]":
                in_class = False
            out += c
        elif c == b"[":
            in_class = True
            out += c
            if pattern[i + 1:i + 2] == b"^":
                out += b"^"
                i += 1
            if pattern[i + 1:i + 2] == b"]":
                out += b"]"
                i += 1
        elif c not in (b"^", b"$"):
            out += c
        i += 1
    return bytes(out)


# Constructs Hyperscan only takes as a prefilter (lookaround, backreferences, atomic/possessive).
_NEEDS_PREFILTER = re.compile(rb"\(\?(?:[=!>]|<[=!]|P=)|\\[1-9]|[*+?}]\+")
_BOUNDED_REPEAT = re.compile(rb"\{(\d+)(?:,(\d*))?\}")
MAX_REPEAT = 100  # larger bounded repeats make Hyperscan compile for seconds: re decides those


def _too_costly(pattern: bytes) -> bool:
    return any(int(m.group(2) or m.group(1)) > MAX_REPEAT for m in _BOUNDED_REPEAT.finditer(pattern))


def _matches_empty(pattern: bytes, re_flags: int) -> bool:
    try:
        return re.compile(pattern, re_flags).search(b"") is not None
    except re.error:
        return True


def _try_compile(items: Sequence[tuple[int, bytes, int]]) -> Any:
    assert _hs is not None
    db = _hs.Database()
    try:
        db.compile(expressions=[e for _, e, _ in items], ids=[i for i, _, _ in items], elements=len(items),
                   flags=[f for _, _, f in items])
    except _hs.error:
        return None
    return db


def _hs_flags(re_flags: int) -> int:
    assert _hs is not None
    flags = _hs.HS_FLAG_SINGLEMATCH
    if re_flags & re.IGNORECASE:
        flags |= _hs.HS_FLAG_CASELESS
    if re_flags & re.DOTALL:
        flags |= _hs.HS_FLAG_DOTALL
    return flags


def _hs_pattern(pattern: bytes, re_flags: int) -> bytes:
    return b"(?x)" + pattern if re_flags & re.VERBOSE else pattern


class PatternSet:
    def __init__(self, patterns: Sequence[tuple[int, bytes, int]], use_hyperscan: bool = True,
                 cache_dir: Path | None = None) -> None:
        """`patterns`: (id, python pattern bytes, re flags). With `cache_dir`, the compiled database is
        kept there (keyed by `cache_key`) and loaded instead of compiled when present."""
        self.ids = [pid for pid, _, _ in patterns]
        self.always: set[int] = set(self.ids)
        self.exact = 0
        self.prefiltered = 0
        self._db: Any = None
        self._local = threading.local()
        self.from_cache = False
        if use_hyperscan and HYPERSCAN_AVAILABLE and patterns:
            self._compile(patterns, cache_dir)

    @property
    def accelerated(self) -> bool:
        return self._db is not None

    def _compile(self, patterns: Sequence[tuple[int, bytes, int]], cache_dir: Path | None = None) -> None:
        assert _hs is not None
        chosen: list[tuple[int, bytes, int]] = []
        for pid, pattern, re_flags in patterns:
            bare = pattern.replace(b"\\\\", b"")
            loose = strip_anchors(pattern)
            if _too_costly(bare) or _matches_empty(loose, re_flags):
                continue  # stays in `always`: re decides
            flags = _hs_flags(re_flags)
            if _NEEDS_PREFILTER.search(bare):
                flags |= _hs.HS_FLAG_PREFILTER
            chosen.append((pid, _hs_pattern(loose, re_flags), flags))
        cache_file = cache_dir / f"{cache_key(chosen)}.hsdb" if cache_dir is not None and chosen else None
        cached = _load_cached(cache_file) if cache_file is not None else None
        if cached is not None:
            db, chosen = cached
            self.from_cache = True
        else:
            db = self._build(chosen)
            if db is not None and cache_file is not None:
                _store_cached(cache_file, db, chosen)
        if db is None:
            return
        self._db = db
        for pid, _, flags in chosen:
            self.always.discard(pid)
            if flags & _hs.HS_FLAG_PREFILTER:
                self.prefiltered += 1
            else:
                self.exact += 1

    def _build(self, chosen: list[tuple[int, bytes, int]]) -> Any:
        """One database of all `chosen`; patterns Hyperscan refuses are found by bisection and dropped
        (tried once more with HS_FLAG_PREFILTER)."""
        assert _hs is not None
        if not chosen:
            return None
        db = _try_compile(chosen)
        if db is not None:
            return db
        good = self._bisect(chosen)
        chosen[:] = good
        return _try_compile(good) if good else None

    def _bisect(self, items: list[tuple[int, bytes, int]]) -> list[tuple[int, bytes, int]]:
        assert _hs is not None
        if _try_compile(items) is not None:
            return items
        if len(items) == 1:
            pid, expression, flags = items[0]
            if not flags & _hs.HS_FLAG_PREFILTER:
                retry = [(pid, expression, flags | _hs.HS_FLAG_PREFILTER)]
                if _try_compile(retry) is not None:
                    return retry
            return []
        middle = len(items) // 2
        return self._bisect(items[:middle]) + self._bisect(items[middle:])

    def _scratch(self) -> Any:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            assert _hs is not None
            scratch = self._local.scratch = _hs.Scratch(self._db)
        return scratch

    def candidates(self, chunks: Sequence[bytes]) -> set[int]:
        """Ids of the patterns that may match one of `chunks` (a superset of the true matches)."""
        return set(self.locate(chunks))

    def locate(self, chunks: Sequence[bytes]) -> dict[int, int]:
        """Candidate ids, each with the index of the first chunk where it can match.

        Hyperscan (SINGLEMATCH, block mode) reports a pattern once, at its earliest match end. Its pattern
        matches a superset of what `re` matches, so `re` cannot match in an earlier chunk: confirmation may
        start at that chunk instead of the first (long bodies have hundreds of paragraphs)."""
        if self._db is None:
            return dict.fromkeys(self.ids, 0)
        found: dict[int, int] = dict.fromkeys(self.always, 0)
        ends: dict[int, int] = {}

        def on_match(pid: int, start: int, end: int, flags: int, context: object) -> None:
            ends.setdefault(pid, end)

        buffer = b"\n".join(chunks)
        if buffer:  # patterns that can match empty input are never in the database: they are in `always`
            self._db.scan(buffer, match_event_handler=on_match, scratch=self._scratch())
        if ends:
            starts: list[int] = []
            offset = 0
            for chunk in chunks:
                starts.append(offset)
                offset += len(chunk) + 1
            for pid, end in ends.items():
                found[pid] = max(0, bisect.bisect_right(starts, end - 1) - 1)
        return found
