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

import re
import threading
from collections.abc import Sequence
from typing import Any

_hs: Any
try:  # optional accelerator
    import hyperscan as _hs
except ImportError:  # pragma: no cover - the wheel installs on our platforms
    _hs = None

HYPERSCAN_AVAILABLE = _hs is not None


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
    def __init__(self, patterns: Sequence[tuple[int, bytes, int]], use_hyperscan: bool = True) -> None:
        """`patterns`: (id, python pattern bytes, re flags)."""
        self.ids = [pid for pid, _, _ in patterns]
        self.always: set[int] = set(self.ids)
        self.exact = 0
        self.prefiltered = 0
        self._db: Any = None
        self._local = threading.local()
        if use_hyperscan and HYPERSCAN_AVAILABLE and patterns:
            self._compile(patterns)

    @property
    def accelerated(self) -> bool:
        return self._db is not None

    def _compile(self, patterns: Sequence[tuple[int, bytes, int]]) -> None:
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
        db = self._build(chosen)
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
        if self._db is None:
            return set(self.ids)
        found: set[int] = set(self.always)

        def on_match(pid: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(pid)

        buffer = b"\n".join(chunks)
        if buffer:  # patterns that can match empty input are never in the database: they are in `always`
            self._db.scan(buffer, match_event_handler=on_match, scratch=self._scratch())
        return found
