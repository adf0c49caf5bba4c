"""Parser of SpamAssassin-style `.cf` rule files.

Facts of the language (from SpamAssassin's documentation; this is our own implementation):

- One setting per line; `#` starts a comment unless escaped as `\\#`; leading whitespace is ignored.
  SpamAssassin has no continuation lines ("each rule or configuration setting must fit on one line"),
  so neither do we: a line is a setting.
- Rules: `header`, `mimeheader`, `body`, `rawbody`, `uri`, `full`, `meta`; a regex rule's pattern is
  Perl (`/re/flags`, `m{re}flags`), `eval:fn(args)` names a built-in test.
- `score NAME s0 [s1 s2 s3]`: four score sets (0 = no Bayes, no network tests; 1 = network; 2 = Bayes;
  3 = both). We run neither Bayes nor network tests inside the rule engine, so we use **score set 0**,
  the first number. Rules without a score get 1.0 (`tflags nice` rules -1.0, `T_` test rules 0.01), `__` sub-rules 0.
- `describe`, `tflags` (`multiple`, `maxhits=N`, `nice`, `net`, `learn`, `userconf`, ... recorded),
  `priority`; `lang xx ...` lines are localisations and skipped.
- `if EXPR` / `ifplugin Plugin` / `else` / `endif`; `include FILE` (relative to the including file).
  `ifplugin` is true only for the plugins we emulate (`EMULATED_PLUGINS`); unknown plugins are absent.
- Any other setting (`freemail_domains`, `util_rb_tld`, ...) is ignored and counted.

Problems never raise: a malformed line becomes a `Problem(file, line, message)` and the good lines still
load; a rule we cannot run (untranslatable regex, unknown eval) is recorded in `unsupported`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import perlre
from .meta import MetaExpr, MetaSyntaxError, parse_meta

RULE_KINDS = ("header", "mimeheader", "body", "rawbody", "uri", "full", "meta")
VERSION = 4.000001  # the SpamAssassin rule-language version we claim in `if (version >= ...)`
PLUGIN_PREFIX = "Mail::SpamAssassin::Plugin::"
# Plugins whose rule syntax or eval tests the engine emulates (at least in part).
EMULATED_PLUGINS = frozenset({"Check", "HeaderEval", "BodyEval", "MIMEEval", "HTMLEval", "MIMEHeader"})
MAX_INCLUDE_DEPTH = 10

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNESCAPED_HASH = re.compile(r"(?<!\\)#.*$")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    rule: str = ""

    def __str__(self) -> str:
        prefix = f"{self.rule}: " if self.rule else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}"


@dataclass
class Rule:
    name: str
    kind: str
    file: str
    line: int
    regex: perlre.PerlRegex | None = None
    negate: bool = False            # header X !~ /re/
    header: str = ""                # header rules: the header name (or ALL, ToCc, MESSAGEID, ...)
    modifier: str = ""              # :raw, :addr, :name, ...
    if_unset: str | None = None     # [if-unset: STR]
    exists: bool = False            # header X exists:Name
    eval_name: str = ""
    eval_args: tuple[str, ...] = ()
    meta: MetaExpr | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class RuleSet:
    rules: dict[str, Rule] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    describes: dict[str, str] = field(default_factory=dict)
    tflags: dict[str, set[str]] = field(default_factory=dict)
    priorities: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unsupported: list[Problem] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def score(self, name: str) -> float:
        if name in self.scores:
            return self.scores[name]
        if name.startswith("__"):
            return 0.0
        if name.startswith("T_"):
            return 0.01
        return -1.0 if "nice" in self.tflags.get(name, set()) else 1.0

    def describe(self, name: str) -> str:
        return self.describes.get(name, "")

    def maxhits(self, name: str) -> int:
        """1 unless `tflags multiple` (then maxhits=N, or unbounded-ish 1000)."""
        flags = self.tflags.get(name, set())
        limit = next((int(f.split("=", 1)[1]) for f in flags if f.startswith("maxhits=") and
                      f.split("=", 1)[1].isdigit()), 0)
        if limit:
            return limit
        return 1000 if "multiple" in flags else 1

    def merge(self, other: RuleSet) -> None:
        self.rules.update(other.rules)
        self.scores.update(other.scores)
        self.describes.update(other.describes)
        for name, flags in other.tflags.items():
            self.tflags[name] = flags
        self.priorities.update(other.priorities)
        self.problems += other.problems
        self.unsupported += other.unsupported
        self.ignored.update(other.ignored)
        self.files += other.files

    def report(self) -> str:
        kinds = Counter(r.kind for r in self.rules.values())
        lines = [f"{len(self.rules)} rules from {len(self.files)} files ("
                 + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")",
                 f"{len(self.unsupported)} unsupported, {len(self.problems)} malformed lines, "
                 f"{sum(self.ignored.values())} other settings ignored"]
        lines += [f"  unsupported {p}" for p in self.unsupported]
        lines += [f"  malformed {p}" for p in self.problems]
        return "\n".join(lines)


# --- `if` conditions ---------------------------------------------------------------------------

_CALL = re.compile(r"\b(plugin|can|has)\s*\(\s*([\w:]+)\s*\)")


def _plugin_present(name: str) -> bool:
    short = name[len(PLUGIN_PREFIX):] if name.startswith(PLUGIN_PREFIX) else name
    return short in EMULATED_PLUGINS


def eval_condition(expr: str) -> bool:
    """`if` expression: version, perl_version, plugin(X), can(X) (features: none claimed), has(X)."""
    def call(m: re.Match[str]) -> str:
        if m.group(1) == "plugin":
            return "1" if _plugin_present(m.group(2)) else "0"
        return "0"  # can()/has(): we claim no optional SpamAssassin feature or method
    text = _CALL.sub(call, expr)
    text = re.sub(r"\bperl_version\b", "5.036", text)
    text = re.sub(r"\bversion\b", f"{VERSION:.6f}", text)
    parsed = parse_meta(text)
    if parsed.deps:
        raise MetaSyntaxError(f"unknown names in condition: {', '.join(sorted(parsed.deps))}")
    return bool(parsed.evaluate({}))


# --- lines -------------------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    if "#" in line:
        line = _UNESCAPED_HASH.sub("", line)
        line = line.replace("\\#", "#")
    return line.strip()


_EVAL = re.compile(r"^eval:\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$")


def _eval_args(text: str) -> tuple[str, ...]:
    args: list[str] = []
    for m in re.finditer(r"""\s*(?:'([^']*)'|"([^"]*)"|([^,'"\s][^,]*?))\s*(?:,|$)""", text):
        value = next((g for g in m.groups() if g is not None), "")
        if m.group(0).strip():
            args.append(value.strip())
    return tuple(args)


class _FileParser:
    def __init__(self, ruleset: RuleSet) -> None:
        self.rs = ruleset

    def problem(self, file: str, line: int, message: str, rule: str = "") -> None:
        self.rs.problems.append(Problem(file, line, message, rule))

    def unsupported(self, rule: Rule, reason: str) -> None:
        self.rs.unsupported.append(Problem(rule.file, rule.line, reason, rule.name))

    def parse_file(self, path: Path, depth: int = 0) -> None:
        file = str(path)
        try:
            text = path.read_bytes().decode("latin-1")  # byte-preserving: patterns are octets as in Perl
        except OSError as exc:
            self.problem(file, 0, f"cannot read: {exc}")
            return
        self.parse_lines(file, text, path.parent, depth)

    def parse_lines(self, file: str, text: str, base: Path, depth: int = 0) -> None:
        self.rs.files.append(file)
        # stack of (this block active, some branch already taken) for if/else/endif
        stack: list[tuple[bool, bool]] = []
        for number, raw_line in enumerate(text.splitlines(), start=1):
            line = _strip_comment(raw_line)
            if not line:
                continue
            keyword, rest = ([*line.split(None, 1), "", ""])[:2]
            keyword = keyword.lower()
            rest = rest.strip()
            active = all(a for a, _ in stack)
            if keyword in ("if", "ifplugin"):
                if not rest:
                    self.problem(file, number, f"{keyword} without a condition")
                    cond = False
                elif keyword == "ifplugin":
                    cond = _plugin_present(rest.split()[0])
                else:
                    try:
                        cond = eval_condition(rest)
                    except (MetaSyntaxError, RecursionError) as exc:
                        self.problem(file, number, f"bad if condition: {exc}")
                        cond = False
                stack.append((cond, cond))
                continue
            if keyword == "else":
                if not stack:
                    self.problem(file, number, "else without if")
                    continue
                _, taken = stack[-1]
                stack[-1] = (not taken, True)
                continue
            if keyword == "endif":
                if not stack:
                    self.problem(file, number, "endif without if")
                else:
                    stack.pop()
                continue
            if not active:
                continue
            if keyword == "include":
                target = (base / rest).resolve()
                if depth >= MAX_INCLUDE_DEPTH:
                    self.problem(file, number, f"include nested deeper than {MAX_INCLUDE_DEPTH}")
                elif not target.is_file():
                    self.problem(file, number, f"include: no such file {rest}")
                else:
                    self.parse_file(target, depth + 1)
                continue
            try:
                self.setting(file, number, keyword, rest)
            except (ValueError, IndexError, RecursionError) as exc:  # never let one line stop the load
                self.problem(file, number, f"cannot parse {keyword}: {exc}")
        if stack:
            self.problem(file, len(text.splitlines()), f"{len(stack)} if/ifplugin block(s) not closed by endif")

    def setting(self, file: str, number: int, keyword: str, rest: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", keyword):
            self.problem(file, number, f"not a setting: {keyword[:40]!r}")
            return
        if keyword in RULE_KINDS:
            self.rule(file, number, keyword, rest)
        elif keyword == "score":
            parts = rest.split()
            if len(parts) < 2 or not _NAME.match(parts[0]):
                self.problem(file, number, "score needs NAME and at least one number")
                return
            try:
                numbers = [float(p.strip("()")) for p in parts[1:5]]
            except ValueError:
                self.problem(file, number, f"score: not a number in {' '.join(parts[1:])!r}", parts[0])
                return
            self.rs.scores[parts[0]] = numbers[0]  # score set 0: no Bayes, no network tests
        elif keyword == "describe":
            name, text = ([*rest.split(None, 1), "", ""])[:2]
            if not _NAME.match(name):
                self.problem(file, number, "describe needs a rule NAME")
                return
            self.rs.describes[name] = text.strip()
        elif keyword == "tflags":
            name, *flags = rest.split() or [""]
            if not _NAME.match(name):
                self.problem(file, number, "tflags needs a rule NAME")
                return
            self.rs.tflags[name] = set(flags)
        elif keyword == "priority":
            parts = rest.split()
            if len(parts) != 2 or not _NAME.match(parts[0]) or not re.fullmatch(r"-?\d+", parts[1]):
                self.problem(file, number, "priority needs NAME and an integer")
                return
            self.rs.priorities[parts[0]] = int(parts[1])
        else:
            self.rs.ignored[keyword] += 1

    def rule(self, file: str, number: int, kind: str, rest: str) -> None:
        name, spec = ([*rest.split(None, 1), "", ""])[:2]
        spec = spec.strip()
        if not _NAME.match(name):
            self.problem(file, number, f"{kind}: bad or missing rule name {name[:40]!r}")
            return
        if not spec:
            self.problem(file, number, f"{kind} {name}: missing test", name)
            return
        rule = Rule(name=name, kind=kind, file=file, line=number)
        m = _EVAL.match(spec)
        if spec.startswith("eval:"):
            if not m or kind in ("meta", "uri"):
                self.problem(file, number, f"{kind} {name}: bad eval test {spec[:60]!r}", name)
                return
            rule.eval_name, rule.eval_args = m.group(1), _eval_args(m.group(2))
        elif kind == "meta":
            try:
                rule.meta = parse_meta(spec)
            except (MetaSyntaxError, RecursionError) as exc:
                self.problem(file, number, f"meta {name}: {exc}", name)
                return
        elif kind in ("header", "mimeheader"):
            if not self.header_spec(rule, spec):
                return
        else:
            if not re.match(r"^(?:/|m\W)", spec):
                self.problem(file, number, f"{kind} {name}: expected /pattern/, got {spec[:40]!r}", name)
                return
            try:
                rule.regex = perlre.parse(spec)
            except perlre.Untranslatable as exc:
                self.rs.rules.pop(name, None)
                self.unsupported(rule, f"regex: {exc}")
                return
        self.rs.rules[name] = rule

    def header_spec(self, rule: Rule, spec: str) -> bool:
        file, number, name = rule.file, rule.line, rule.name
        if spec.startswith("exists:"):
            target = spec[len("exists:"):].strip()
            if not re.fullmatch(r"[!-9;-~]+", target):
                self.problem(file, number, f"header {name}: bad header name in exists:", name)
                return False
            rule.exists, rule.header = True, target
            return True
        m = re.match(r"^([!-9;-~]+?)((?::[a-z]+)*)\s*(=~|!~)\s*(.*)$", spec)
        if not m:
            self.problem(file, number, f"header {name}: expected 'Header =~ /re/', got {spec[:60]!r}", name)
            return False
        rule.header, mods, op, pattern = m.group(1), m.group(2), m.group(3), m.group(4)
        rule.modifier = mods.lstrip(":")
        rule.negate = op == "!~"
        unset = re.search(r"\s*\[if-unset:\s*(.*?)\]\s*$", pattern)
        if unset:
            rule.if_unset = unset.group(1)
            pattern = pattern[: unset.start()]
        try:
            rule.regex = perlre.parse(pattern)
        except perlre.Untranslatable as exc:
            if not re.match(r"^(?:/|m\W)", pattern.strip()):
                self.problem(file, number, f"header {name}: {exc}", name)
            else:
                self.rs.rules.pop(name, None)
                self.unsupported(rule, f"regex: {exc}")
            return False
        return True


def load_paths(paths: list[Path]) -> RuleSet:
    """Rule set from `.cf` files and directories (a directory's `*.cf` in name order, as SpamAssassin)."""
    ruleset = RuleSet()
    parser = _FileParser(ruleset)
    for path in paths:
        if path.is_dir():
            for cf in sorted(path.glob("*.cf")):
                parser.parse_file(cf)
        elif path.is_file():
            parser.parse_file(path)
        else:
            ruleset.problems.append(Problem(str(path), 0, "no such rule file or directory"))
    return ruleset


def parse_text(text: str, file: str = "<text>", base: Path | None = None) -> RuleSet:
    """Rule set from the text of one `.cf` file (tests, ad-hoc rules); `include` is relative to `base`."""
    ruleset = RuleSet()
    _FileParser(ruleset).parse_lines(file, text, base or Path.cwd())
    return ruleset
