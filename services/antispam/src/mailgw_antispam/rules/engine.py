"""Runs a loaded rule set on a message with SpamAssassin semantics.

Regex rules of one type (body, rawbody, uri, full, and header rules per header) are matched together:
a `matcher.PatternSet` tells in one pass which rules can match, `re` confirms them (and counts hits for
`tflags multiple`). Eval rules call `evals.EVALS`. Metas run last, in dependency order; a meta that
depends on a missing or unsupported rule, or on itself through a cycle, is reported unsupported and
never runs. Rules named `__*` and rules scored 0 are computed (metas use them) but never reported.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mailgw_libs.events import SymbolHit

from . import evals
from .matcher import PatternSet
from .message import MessageView
from .parser import Problem, Rule, RuleSet

TEXT_KINDS = ("body", "rawbody", "uri", "full")
MIN_HEADER_GROUP = 3  # header rules on one header: below this many, plain re is as fast


@dataclass
class _Compiled:
    rule: Rule
    regex: re.Pattern[bytes] | None
    maxhits: int


def _detail(data: bytes) -> str:
    return data[:120].decode("utf-8", "replace").replace("\n", " ").strip()[:80]


class Engine:
    def __init__(self, ruleset: RuleSet, use_hyperscan: bool = True, ok_languages: tuple[str, ...] = ("all",),
                 cache_dir: Path | None = None) -> None:
        self.ruleset = ruleset
        self._cache_dir = cache_dir  # compiled Hyperscan databases kept on disk (matcher.PatternSet)
        # the site's languages (setting ok_languages): the language eval test reads them from the view
        self.ok_languages = ok_languages
        self.unsupported: list[Problem] = list(ruleset.unsupported)
        self._ids: list[_Compiled] = []
        self._text: dict[str, tuple[list[int], PatternSet]] = {}
        self._headers: dict[tuple[str, str], tuple[list[int], PatternSet | None]] = {}
        self._exists: list[int] = []
        self._mimeheader: list[int] = []
        self._evals: list[tuple[int, evals.EvalFn]] = []
        self._metas: list[Rule] = []
        by_kind: dict[str, list[int]] = defaultdict(list)
        headers: dict[tuple[str, str], list[int]] = defaultdict(list)
        for rule in ruleset.rules.values():
            if rule.kind == "meta" and rule.meta is not None:
                continue
            if rule.eval_name:
                fn = evals.EVALS.get(rule.eval_name)
                if fn is None:
                    self.unsupported.append(Problem(rule.file, rule.line, f"eval:{rule.eval_name} not implemented",
                                                    rule.name))
                    continue
                self._evals.append((self._add(rule, None), fn))
                continue
            if rule.exists:
                self._exists.append(self._add(rule, None))
                continue
            assert rule.regex is not None
            pid = self._add(rule, rule.regex.compile())
            if rule.kind == "mimeheader":
                self._mimeheader.append(pid)
            elif rule.kind == "header":
                headers[(rule.header, rule.modifier)].append(pid)
            else:
                by_kind[rule.kind].append(pid)
        for kind, pids in by_kind.items():
            self._text[kind] = (pids, self._pattern_set(pids, use_hyperscan))
        for key, pids in headers.items():
            pset = self._pattern_set(pids, use_hyperscan) if len(pids) >= MIN_HEADER_GROUP else None
            self._headers[key] = (pids, pset)
        self._runnable = {c.rule.name for c in self._ids}
        self._order_metas()

    def _add(self, rule: Rule, regex: re.Pattern[bytes] | None) -> int:
        self._ids.append(_Compiled(rule, regex, self.ruleset.maxhits(rule.name)))
        return len(self._ids) - 1

    def _pattern_set(self, pids: list[int], use_hyperscan: bool) -> PatternSet:
        patterns = []
        for pid in pids:
            regex = self._ids[pid].rule.regex
            assert regex is not None
            patterns.append((pid, regex.python, regex.re_flags))
        return PatternSet(patterns, use_hyperscan, self._cache_dir)

    @property
    def from_cache(self) -> bool:
        """Every Hyperscan database was loaded from the disk cache (none compiled)."""
        sets = [p for _, p in self._text.values()] + [p for _, p in self._headers.values() if p is not None]
        return any(p.accelerated for p in sets) and all(p.from_cache for p in sets if p.accelerated)

    @property
    def accelerated(self) -> bool:
        return any(p.accelerated for _, p in self._text.values())

    def _order_metas(self) -> None:
        metas = {r.name: r for r in self.ruleset.rules.values() if r.kind == "meta" and r.meta is not None}
        state: dict[str, int] = {}  # 1 visiting, 2 done (runnable), 3 done (unsupported)
        ordered: list[Rule] = []

        def visit(name: str, path: list[str]) -> bool:
            if state.get(name) == 2:
                return True
            if state.get(name) == 3:
                return False
            rule = metas[name]
            if state.get(name) == 1:
                cycle = " -> ".join([*path[path.index(name):], name])
                self.unsupported.append(Problem(rule.file, rule.line, f"meta cycle: {cycle}", name))
                return False
            state[name] = 1
            assert rule.meta is not None
            ok = True
            for dep in sorted(rule.meta.deps):
                if dep in metas:
                    if not visit(dep, [*path, name]):
                        if ok:
                            self.unsupported.append(Problem(rule.file, rule.line,
                                                            f"depends on unsupported meta {dep}", name))
                        ok = False
                elif dep not in self._runnable:
                    reason = "unsupported" if dep in self.ruleset.rules or any(
                        p.rule == dep for p in self.unsupported) else "undefined"
                    if ok:
                        self.unsupported.append(Problem(rule.file, rule.line, f"depends on {reason} rule {dep}",
                                                        name))
                    ok = False
            state[name] = 2 if ok else 3
            if ok:
                ordered.append(rule)
            return ok

        for name in metas:
            visit(name, [])
        self._metas = ordered

    # --- running -------------------------------------------------------------------------------

    def _regex_hits(self, pid: int, chunks: list[bytes], values: dict[str, float],
                    details: dict[str, str]) -> None:
        compiled = self._ids[pid]
        assert compiled.regex is not None
        count = 0
        first = b""
        for chunk in chunks:
            if compiled.maxhits == 1:
                m = compiled.regex.search(chunk)
                if m:
                    count, first = 1, m.group(0)
                    break
                continue
            for m in compiled.regex.finditer(chunk):
                if not count:
                    first = m.group(0)
                count += 1
                if count >= compiled.maxhits:
                    break
            if count >= compiled.maxhits:
                break
        if count:
            values[compiled.rule.name] = float(count)
            details[compiled.rule.name] = _detail(first)

    def evaluate(self, view: MessageView) -> tuple[dict[str, float], dict[str, str]]:
        """Hit counts of every rule that hit (metas included) and a match detail per rule."""
        values: dict[str, float] = {}
        details: dict[str, str] = {}
        if self.ok_languages != ("all",):
            view.ok_languages = self.ok_languages
        sources = {"body": view.body, "rawbody": view.rawbody, "uri": view.uris, "full": [view.raw]}
        for kind, (pids, pset) in self._text.items():
            chunks = sources[kind]
            located = pset.locate(chunks)  # candidate -> first chunk where it can match
            for pid in pids:
                if pid in located:
                    first = located[pid]
                    self._regex_hits(pid, chunks[first:] if first else chunks, values, details)
        for (header, modifier), (pids, hset) in self._headers.items():
            value = view.header(header, modifier)
            chunk = [value.encode("utf-8", "replace")] if value is not None else []
            candidates = hset.candidates(chunk) if hset is not None and chunk else set(pids)
            for pid in pids:
                rule = self._ids[pid].rule
                if value is None and rule.if_unset is not None:
                    self._header_rule(pid, [rule.if_unset.encode("utf-8", "replace")], values, details)
                elif pid in candidates:
                    self._header_rule(pid, chunk, values, details)
                elif rule.negate:  # could not match, so !~ hits
                    values[rule.name] = 1.0
        for pid in self._exists:
            rule = self._ids[pid].rule
            if view.exists(rule.header):
                values[rule.name] = 1.0
        for pid in self._mimeheader:
            rule = self._ids[pid].rule
            lname = rule.header.lower()
            chunks = [v.encode("utf-8", "replace") for hs in view.part_headers for n, v in hs if n.lower() == lname]
            if chunks:
                self._header_rule(pid, chunks, values, details)
        for pid, fn in self._evals:
            rule = self._ids[pid].rule
            try:
                count, detail = fn(view, rule.eval_args)
            except (ValueError, TypeError, LookupError, AttributeError, RecursionError):
                count, detail = 0, ""
            if count:
                values[rule.name] = float(min(count, self._ids[pid].maxhits))
                details[rule.name] = detail
        for meta in self._metas:
            assert meta.meta is not None
            if meta.meta.evaluate(values):
                values[meta.name] = 1.0
        return values, details

    def _header_rule(self, pid: int, chunks: list[bytes], values: dict[str, float], details: dict[str, str]) -> None:
        rule = self._ids[pid].rule
        if not rule.negate:
            self._regex_hits(pid, chunks, values, details)
            return
        regex = self._ids[pid].regex
        assert regex is not None
        if not any(regex.search(c) for c in chunks):
            values[rule.name] = 1.0

    def run(self, view: MessageView) -> list[SymbolHit]:
        values, details = self.evaluate(view)
        hits: list[SymbolHit] = []
        for name in values:
            score = self.ruleset.score(name)
            if name.startswith("__") or score == 0:
                continue
            detail = self.ruleset.describe(name) or details.get(name, "")
            hits.append(SymbolHit(name=name, score=score, detail=detail[:200]))
        return hits
