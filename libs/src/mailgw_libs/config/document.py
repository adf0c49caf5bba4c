"""YAML in and out of `GatewayConfig`, safely, with errors that name the YAML path.

PyYAML's safe loader (libyaml when available) builds only plain data. Before building anything the event
stream is checked: no anchors/aliases (a "billion laughs" document is tiny as text and huge as data), a
bounded nesting depth and node count, and no duplicate keys (YAML takes the last silently; in a
configuration that is almost always a mistake).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .model import GatewayConfig

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 2_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class ConfigError(ValueError):
    """A configuration document that cannot be used; the message is meant for the administrator."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


def _check_events(text: str) -> None:
    """Refuse aliases, deep nesting, huge node counts and duplicate keys before any object is built."""
    # One frame per open collection: [is_mapping, expecting_key, keys seen].
    stack: list[tuple[bool, list[bool], set[str]]] = []
    nodes = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ConfigError(f"{_where(event.start_mark)}: YAML anchors and aliases (&, *) are not allowed")
        is_node = isinstance(event, yaml.ScalarEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent)
        if not is_node:
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                _value_done(stack)
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"document has more than {MAX_NODES} nodes")
        top = stack[-1] if stack else None
        if top is not None and top[0] and top[1][0]:
            if not isinstance(event, yaml.ScalarEvent):
                raise ConfigError(f"{_where(event.start_mark)}: mapping keys must be plain scalars")
            if event.value in top[2]:
                raise ConfigError(f"{_where(event.start_mark)}: duplicate key {event.value!r}")
            top[2].add(event.value)
            top[1][0] = False
            continue
        if isinstance(event, yaml.ScalarEvent):
            _value_done(stack)
            continue
        if len(stack) >= MAX_DEPTH:
            raise ConfigError(f"{_where(event.start_mark)}: nested deeper than {MAX_DEPTH} levels")
        stack.append((isinstance(event, yaml.MappingStartEvent), [True], set()))


def _value_done(stack: list[tuple[bool, list[bool], set[str]]]) -> None:
    """A complete value was read: the enclosing mapping expects a key next."""
    if stack and stack[-1][0]:
        stack[-1][1][0] = True


def parse_yaml(text: str | bytes) -> object:
    """Plain data of one YAML document, or ConfigError."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"document is not UTF-8: {exc}") from None
    try:
        _check_events(text)
        # _Loader is the safe loader (CSafeLoader, or SafeLoader without libyaml): plain data only.
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"YAML: {exc.problem} at {_where(exc.problem_mark)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # E.g. an integer literal with more digits than Python converts.
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"YAML value: {exc}") from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " (the key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document)"


def describe(exc: ValidationError, limit: int = 20) -> str:
    """One line per error: `ingress.dnsbl.sites[1].weight: Input should be ...`."""
    lines = []
    for error in exc.errors(include_url=False)[:limit]:
        # Pydantic adds the name of the function/type that failed to the location; drop it.
        loc = tuple(p for p in error["loc"]
                    if not (isinstance(p, str) and p != "[key]" and ("[" in p or p.startswith("function-"))))
        message = error["msg"].removeprefix("Value error, ")
        # Cross-reference checks of a whole section name their paths in the message already.
        lines.append(f"{_path(loc)}: {message}" if loc else message)
    if exc.error_count() > limit:
        lines.append(f"... and {exc.error_count() - limit} more errors")
    return "\n".join(lines)


def validate(data: object) -> GatewayConfig:
    """The validated configuration of plain data, or ConfigError listing every problem with its path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the document must be a mapping of sections, not {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    except RecursionError:
        raise ConfigError("document nested too deeply") from None


def load_text(text: str | bytes) -> GatewayConfig:
    return validate(parse_yaml(text))


def load_file(path: str | Path) -> GatewayConfig:
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise ConfigError(f"{file}: larger than {MAX_DOCUMENT_BYTES} bytes")
        return load_text(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{file}: {exc.strerror}") from None


def to_data(config: GatewayConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def to_yaml(config: GatewayConfig) -> str:
    """The whole document as YAML, sections in model order (export, diffs)."""
    text: str = yaml.dump(to_data(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=120)
    return text


def canonical_json(data: dict[str, Any]) -> bytes:
    """Byte-stable form of a document's data: the content hash is over this."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def hash_data(data: dict[str, Any]) -> str:
    """Hash of the data as stored (not as re-validated: defaults added by a newer model must not break it)."""
    return hashlib.sha256(canonical_json(data)).hexdigest()


def content_hash(config: GatewayConfig) -> str:
    return hash_data(to_data(config))
