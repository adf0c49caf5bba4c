"""Perl regular expressions (as written in SpamAssassin `.cf` files) translated to Python `re` (bytes).

Rules are matched on bytes (UTF-8 text), as Perl matches octets: `.` is one byte, `\\w` is ASCII.
Translated: `m{..}`/`m!..!` delimiters, the `i s m x` flags, `\\z` `\\Z` `\\A`, `\\h` `\\v` `\\R` `\\N`,
`\\Q..\\E`, `\\x{..}`, `\\e`, `\\cX`, POSIX classes, `(?<name>..)`/`\\k<name>`/`\\g{N}`, inline flags in the
middle of a pattern (scoped to the rest of their group, as in Perl), literal `{,n}`. Possessive
quantifiers and atomic groups are native in Python 3.11. Anything else `re` refuses raises
`Untranslatable` (the rule is then reported unsupported, never a crash).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass


class Untranslatable(ValueError):
    """The Perl regex has a construct we cannot express in Python `re`."""


_FLAG_BITS = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE, "x": re.VERBOSE}
_IGNORED_FLAGS = set("gor")  # match-all, compile-once, non-destructive: no meaning for a test
_PAIRS = {"{": "}", "(": ")", "[": "]", "<": ">"}

_POSIX = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "word": r"\w", "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}


@dataclass(frozen=True)
class PerlRegex:
    source: str          # the Perl pattern body, without delimiters
    flags: str           # the Perl flags as written (i, s, m, x)
    python: bytes        # the translated pattern for `re` (bytes mode)
    re_flags: int

    def compile(self) -> re.Pattern[bytes]:
        return compile_python(self.python, self.re_flags)


def compile_python(pattern: bytes, flags: int) -> re.Pattern[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(pattern, flags)


def split_delimited(text: str) -> tuple[str, str, str]:
    """`/re/flags`, `m{re}flags`, `m!re!flags` -> (pattern, flags, rest after the flags).

    Raises Untranslatable when `text` does not start with a delimited pattern."""
    s = text.lstrip()
    if s.startswith("m") and len(s) > 1 and not s[1].isalnum() and not s[1].isspace():
        s = s[1:]
    elif not s.startswith("/"):
        raise Untranslatable(f"expected /pattern/ or m{{pattern}}, got {text[:40]!r}")
    open_ = s[0]
    close = _PAIRS.get(open_, open_)
    depth = 0
    i = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == open_ and close != open_:
            depth += 1
        elif c == close:
            if depth == 0:
                break
            depth -= 1
        i += 1
    else:
        raise Untranslatable("unterminated pattern")
    body = s[1:i]
    if close != open_ or open_ != "/":
        # an escaped delimiter stands for itself
        body = body.replace("\\" + open_, open_) if not _is_meta(open_) else body
        if close != open_:
            body = body.replace("\\" + close, close) if not _is_meta(close) else body
    j = i + 1
    while j < len(s) and s[j].isalpha():
        j += 1
    return body, s[i + 1:j], s[j:]


def _is_meta(c: str) -> bool:
    return c in r".^$*+?()[]{}|\\"


def parse(text: str) -> PerlRegex:
    """A delimited Perl regex (`/re/i`, `m{re}s`): translated, compiled once to check it."""
    body, flags, rest = split_delimited(text)
    if rest.strip():
        raise Untranslatable(f"trailing text after the pattern: {rest.strip()[:40]!r}")
    return translate(body, flags)


def translate(body: str, flags: str = "") -> PerlRegex:
    re_flags = 0
    for f in flags:
        if f in _FLAG_BITS:
            re_flags |= _FLAG_BITS[f]
        elif f not in _IGNORED_FLAGS:
            raise Untranslatable(f"unsupported regex flag {f!r}")
    python = _translate_body(body, extended=bool(re_flags & re.VERBOSE))
    try:
        encoded = python.encode("latin-1")
    except UnicodeEncodeError:
        encoded = python.encode("utf-8")
    try:
        compile_python(encoded, re_flags)
    except (re.error, OverflowError, RecursionError) as exc:
        raise Untranslatable(f"python re: {exc}") from exc
    return PerlRegex(body, "".join(f for f in flags if f in _FLAG_BITS), encoded, re_flags)


def _hex_escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return "".join(f"\\x{b:02x}" for b in chr(code).encode("utf-8"))


def _translate_body(p: str, extended: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(p)
    in_class = False
    # one entry per open group: how many scoped "(?flags:" we opened inside it, to close at its end
    scoped: list[list[str]] = [[]]
    leading = ""
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise Untranslatable("trailing backslash")
            d = p[i + 1]
            i += 2
            if d == "Q":
                end = p.find("\\E", i)
                literal = p[i:] if end < 0 else p[i:end]
                i = n if end < 0 else end + 2
                out.append("".join(_hex_escape(ord(ch)) if not ch.isalnum() else ch for ch in literal))
            elif d == "E":
                continue
            elif d == "z":
                out.append(r"\Z")
            elif d == "Z":
                out.append(r"(?=\n?\Z)")
            elif d == "h":
                out.append(r" \t" if in_class else r"[ \t]")
            elif d == "H":
                out.append(r"[^ \t]")
            elif d == "v":
                out.append(r"\n\x0b\f\r" if in_class else r"[\n\x0b\f\r]")
            elif d == "V":
                out.append(r"[^\n\x0b\f\r]")
            elif d == "R":
                out.append(r"(?:\r\n|[\n\x0b\f\r])")
            elif d == "N" and not (i < n and p[i] == "{"):
                out.append(r"[^\n]")
            elif d == "e":
                out.append(r"\x1b")
            elif d == "c" and i < n:
                out.append(_hex_escape(ord(p[i].upper()) ^ 0x40))
                i += 1
            elif d == "x":
                if i < n and p[i] == "{":
                    end = p.find("}", i)
                    if end < 0:
                        raise Untranslatable("unterminated \\x{")
                    digits = p[i + 1:end].strip() or "0"
                    i = end + 1
                    try:
                        out.append(_hex_escape(int(digits, 16)))
                    except ValueError as exc:
                        raise Untranslatable(f"bad \\x{{{digits}}}") from exc
                else:
                    m = re.match(r"[0-9A-Fa-f]{1,2}", p[i:])
                    if m:
                        i += m.end()
                        out.append(_hex_escape(int(m.group(0), 16)))
                    else:
                        out.append(r"\x00")
            elif d == "o" and i < n and p[i] == "{":
                end = p.find("}", i)
                if end < 0:
                    raise Untranslatable("unterminated \\o{")
                out.append(_hex_escape(int(p[i + 1:end], 8)))
                i = end + 1
            elif d == "k" and i < n and p[i] in "<{'":
                close = {"<": ">", "{": "}", "'": "'"}[p[i]]
                end = p.find(close, i + 1)
                if end < 0:
                    raise Untranslatable("unterminated \\k")
                out.append(f"(?P={p[i + 1:end]})")
                i = end + 1
            elif d == "g":
                m = re.match(r"\{?(-?\d+)\}?", p[i:])
                if not m or m.group(1).startswith("-"):
                    raise Untranslatable("\\g form not supported")
                out.append("\\" + m.group(1))
                i += m.end()
            elif d in "KpPXCGluLU":
                raise Untranslatable(f"\\{d} is not supported")
            elif d.isdigit() and d != "0" and in_class:
                out.append(_hex_escape(int(d, 8)) if d < "8" else d)
            elif d.isalnum() and d not in "dDwWsSbBAntrf0123456789aN":
                # Perl treats unknown letter escapes as the letter; Python refuses them
                out.append(d)
            else:
                out.append("\\" + d)
            continue
        if in_class:
            if c == "[" and p.startswith("[:", i):
                end = p.find(":]", i + 2)
                name = p[i + 2:end] if end > 0 else ""
                negated = name.startswith("^")
                if end > 0 and name.lstrip("^") in _POSIX and not negated:
                    out.append(_POSIX[name])
                    i = end + 2
                    continue
                if end > 0 and negated:
                    raise Untranslatable("negated POSIX class")
                out.append(r"\[")
            elif c == "]":
                in_class = False
                out.append("]")
            elif c in "[&~|" or (c == "-" and i + 1 < n and p[i + 1] == "-"):
                out.append("\\" + c)
            else:
                out.append(c)
            i += 1
            continue
        if extended and c == "#":
            end = p.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "[":
            in_class = True
            out.append("[")
            i += 1
            if i < n and p[i] == "^":
                out.append("^")
                i += 1
            if i < n and p[i] == "]":  # a leading ] is literal
                out.append(r"\]")
                i += 1
            continue
        if c == "(":
            if p.startswith("(?#", i):
                end = p.find(")", i)
                i = n if end < 0 else end + 1
                continue
            if p.startswith("(?<", i) and i + 3 < n and p[i + 3] not in "=!":
                out.append("(?P<")
                i += 3
                scoped.append([])
                continue
            if p.startswith("(?'", i):
                end = p.find("'", i + 3)
                out.append(f"(?P<{p[i + 3:end]}>")
                i = end + 1
                scoped.append([])
                continue
            if p.startswith("(?^", i):
                m = re.match(r"\(\?\^([a-z]*)([:)])", p[i:])
                if not m:
                    raise Untranslatable("(?^ form not supported")
                flags = "".join(f for f in m.group(1) if f in "imsx")
                if m.group(2) == ")":
                    raise Untranslatable("(?^) form not supported")
                out.append(f"(?{flags}:" if flags else "(?:")
                i += m.end()
                scoped.append([])
                continue
            m = re.match(r"\(\?([a-z]*)(?:-([a-z]*))?\)", p[i:])
            if m and (m.group(1) or m.group(2)):
                on = "".join(f for f in m.group(1) if f in "imsx")
                off = "".join(f for f in (m.group(2) or "") if f in "imsx")
                i += m.end()
                if not out and len(scoped) == 1 and not off:
                    leading += on  # flags at the very start apply to the whole pattern
                else:
                    spec = on + (f"-{off}" if off else "")
                    if spec:
                        out.append(f"(?{spec}:")
                        scoped[-1].append(spec)
                continue
            out.append("(")
            i += 1
            scoped.append([])
            continue
        if c == ")":
            if len(scoped) > 1:
                out.append(")" * len(scoped.pop()))
            out.append(")")
            i += 1
            continue
        if c == "|" and scoped[-1]:
            # a Perl inline flag lasts to the end of its group, across alternatives: close and re-open it
            out.append(")" * len(scoped[-1]) + "|" + "".join(f"(?{spec}:" for spec in scoped[-1]))
            i += 1
            continue
        if c == "{":
            m = re.match(r"\{(\d*)(?:,(\d*))?\}", p[i:])
            if not m or (not m.group(1)):
                out.append(r"\{")
                i += 1
                continue
            out.append(m.group(0))
            i += m.end()
            continue
        if c == "}":
            out.append(r"\}")
            i += 1
            continue
        if c == "$" and i + 1 < n and (p[i + 1].isalpha() or p[i + 1] in "{_"):
            raise Untranslatable("interpolated variable in pattern")
        out.append(c)
        i += 1
    if in_class:
        raise Untranslatable("unterminated character class")
    out.append(")" * len(scoped[0]))
    body = "".join(out)
    return f"(?{leading})" + body if leading else body
