"""`meta` expressions: boolean and arithmetic over other rules' results, with Perl's precedence.

Grammar (high to low): `!x`, unary `-x`; `* / %`; `+ -`; `< <= > >=`; `== !=`; `&&`; `||`; parentheses;
operands are rule names (their hit count, 0 when they did not hit) and numbers. Parsed once into a tree
of closures: no `eval` of rule text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Values = Mapping[str, float]
Node = Callable[[Values], float]

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_]\w*)|(&&|\|\||==|!=|<=|>=|[!()+\-*/%<>]))")


class MetaSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class MetaExpr:
    source: str
    deps: frozenset[str]
    _node: Node

    def evaluate(self, values: Values) -> float:
        return self._node(values)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise MetaSyntaxError(f"unexpected {text[pos:pos + 20].strip()!r} in meta expression")
        out.append(m.group(m.lastindex or 0))
        pos = m.end()
    return out


_BINARY: dict[str, tuple[int, Callable[[float, float], float]]] = {
    "||": (1, lambda a, b: a or b),
    "&&": (2, lambda a, b: a and b),
    "==": (3, lambda a, b: float(a == b)),
    "!=": (3, lambda a, b: float(a != b)),
    "<": (4, lambda a, b: float(a < b)),
    "<=": (4, lambda a, b: float(a <= b)),
    ">": (4, lambda a, b: float(a > b)),
    ">=": (4, lambda a, b: float(a >= b)),
    "+": (5, lambda a, b: a + b),
    "-": (5, lambda a, b: a - b),
    "*": (6, lambda a, b: a * b),
    "/": (6, lambda a, b: a / b if b else 0.0),
    "%": (6, lambda a, b: float(int(a) % int(b)) if int(b) else 0.0),
}
MAX_DEPTH = 200


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.deps: set[str] = set()
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise MetaSyntaxError("meta expression ends too early")
        self.pos += 1
        return tok

    def expression(self, min_prec: int = 1) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise MetaSyntaxError("meta expression nested too deeply")
        left = self.unary()
        while True:
            op = self.peek()
            if op not in _BINARY or _BINARY[op][0] < min_prec:
                break
            prec, fn = _BINARY[self.take()]
            right = self.expression(prec + 1)
            left = _combine(fn, left, right, op)
        self.depth -= 1
        return left

    def unary(self) -> Node:
        tok = self.take()
        if tok == "!":
            inner = self.unary()
            return lambda v: float(not inner(v))
        if tok == "-":
            inner = self.unary()
            return lambda v: -inner(v)
        if tok == "+":
            return self.unary()
        if tok == "(":
            node = self.expression()
            if self.take() != ")":
                raise MetaSyntaxError("missing )")
            return node
        if tok[0].isdigit():
            number = float(tok)
            return lambda v: number
        if tok[0].isalpha() or tok[0] == "_":
            self.deps.add(tok)
            return lambda v: float(v.get(tok, 0.0))
        raise MetaSyntaxError(f"unexpected {tok!r} in meta expression")


def _combine(fn: Callable[[float, float], float], left: Node, right: Node, op: str) -> Node:
    if op == "&&":
        return lambda v: (right(v) if left(v) else 0.0)
    if op == "||":
        return lambda v: (left(v) or right(v))
    return lambda v: fn(left(v), right(v))


def parse_meta(text: str) -> MetaExpr:
    tokens = _tokens(text)
    if not tokens:
        raise MetaSyntaxError("empty meta expression")
    parser = _Parser(tokens)
    node = parser.expression()
    if parser.peek() is not None:
        raise MetaSyntaxError(f"unexpected {parser.peek()!r} after the meta expression")
    return MetaExpr(text.strip(), frozenset(parser.deps), node)
