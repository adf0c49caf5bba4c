"""Compiled object groups: who (addresses, client IP, directory), what (message facts), when (clock).

Groups are compiled once per configuration (patterns, networks, time zones), then matched per
message (what, when, from) or per recipient (to).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from mailgw_libs.config.rulesystem import (
    WEEKDAYS,
    TimeFrameWhen,
    WhatGroup,
    WhenGroup,
    WhoGroup,
    compile_pattern,
)

from .facts import MessageFacts


class Directory(Protocol):
    """LDAP (or other) directory lookups used by ldap_user / ldap_group who objects."""

    async def is_member(self, address: str, group: str, profile: str) -> bool: ...

    async def user_exists(self, address: str, profile: str) -> bool: ...


class DirectoryLookupFailed(Exception):
    """The directory could not answer (LDAP and its cache down): the message is decided later, not guessed."""


async def _ask(lookup: Awaitable[bool], what: str) -> bool:
    try:
        return await lookup
    except Exception as exc:  # any directory failure means "no answer", never "no match"
        raise DirectoryLookupFailed(f"{what}: {exc!r}") from exc


def _combine(results: Iterable[bool], mode: str, invert: bool, empty: bool) -> bool:
    """any/all over the objects, then invert; an empty group is `empty` before inversion."""
    values = list(results)
    base = False if empty else (all(values) if mode == "all" else any(values))
    return base != invert


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().strip("<>").rpartition("@")
    return local.lower(), domain.lower().rstrip(".")


# --- Who ------------------------------------------------------------------------------------------

WhoTest = Callable[[str, str, str], bool]  # (address, domain, client_ip) -> bool


@dataclass(frozen=True)
class _LdapUser:
    profile: str
    address: str | None


@dataclass(frozen=True)
class _LdapGroup:
    profile: str
    group: str


def _email_test(wanted: str) -> WhoTest:
    return lambda address, _d, _ip: address == wanted


def _regex_test(pattern: str) -> WhoTest:
    regex = compile_pattern(pattern)
    return lambda address, _d, _ip: regex.fullmatch(address) is not None


def _domain_test(wanted: str, subdomains: bool) -> WhoTest:
    suffix = "." + wanted
    return lambda _a, domain, _ip: domain == wanted or (subdomains and domain.endswith(suffix))


def _ip_test(address: str) -> WhoTest:
    wanted = ipaddress.ip_address(address)
    return lambda _a, _d, ip: _parse_ip(ip) == wanted


def _network_test(network: str) -> WhoTest:
    net = ipaddress.ip_network(network)
    def test(_a: str, _d: str, ip: str) -> bool:
        parsed = _parse_ip(ip)
        return parsed is not None and parsed.version == net.version and parsed in net
    return test


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        parsed = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


class CompiledWho:
    def __init__(self, name: str, group: WhoGroup) -> None:
        self.name = name
        self.mode = group.mode
        self.invert = group.invert
        self.empty = not group.objects
        self.tests: list[WhoTest | _LdapUser | _LdapGroup] = []
        for obj in group.objects:
            match obj.type:
                case "email":
                    self.tests.append(_email_test(obj.address))
                case "regex":
                    self.tests.append(_regex_test(obj.pattern))
                case "domain":
                    self.tests.append(_domain_test(obj.domain, obj.subdomains))
                case "ip":
                    self.tests.append(_ip_test(str(obj.address)))
                case "network":
                    self.tests.append(_network_test(obj.network))
                case "ldap_user":
                    self.tests.append(_LdapUser(obj.profile, obj.address))
                case "ldap_group":
                    self.tests.append(_LdapGroup(obj.profile, obj.group))

    @property
    def uses_directory(self) -> bool:
        return any(isinstance(t, _LdapUser | _LdapGroup) for t in self.tests)

    async def matches(self, address: str, client_ip: str, directory: Directory | None) -> bool:
        local, domain = split_address(address)
        normalised = f"{local}@{domain}" if local or domain else ""
        results: list[bool] = []
        for test in self.tests:
            if isinstance(test, _LdapUser):
                hit = bool(normalised) and directory is not None and (
                    test.address is None or test.address == normalised) and \
                    await _ask(directory.user_exists(normalised, test.profile), f"ldap user {test.profile}")
            elif isinstance(test, _LdapGroup):
                hit = bool(normalised) and directory is not None and \
                    await _ask(directory.is_member(normalised, test.group, test.profile),
                               f"ldap group {test.profile}/{test.group}")
            else:
                hit = test(normalised, domain, client_ip)
            results.append(hit)
            # Short-circuit: the answer cannot change any more.
            if (self.mode == "any" and hit) or (self.mode == "all" and not hit):
                break
        return _combine(results, self.mode, self.invert, self.empty)


# --- What -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WhatResult:
    matched: bool
    parts: frozenset[int] = frozenset()  # parts marked by part objects (content type, file name, archive)
    objects: tuple[str, ...] = ()  # descriptions of the objects that matched, for tracking


def _any_full(regex: object, values: Iterable[str]) -> bool:
    return any(regex.fullmatch(v) is not None for v in values if v)  # type: ignore[attr-defined]


class CompiledWhat:
    def __init__(self, name: str, group: WhatGroup) -> None:
        self.name = name
        self.mode = group.mode
        self.invert = group.invert
        self.empty = not group.objects
        self.objects = group.objects
        self.regexes = [compile_pattern(o.pattern) if hasattr(o, "pattern") else None for o in group.objects]

    @property
    def marks_parts(self) -> bool:
        return any(o.type in ("content_type", "filename", "archive_content_type", "archive_filename")
                   for o in self.objects)

    @property
    def needs_headers(self) -> bool:
        return any(o.type == "header" for o in self.objects)

    def _object(self, i: int, facts: MessageFacts, score: float | None) -> tuple[bool, frozenset[int], str]:
        obj, regex = self.objects[i], self.regexes[i]
        match obj.type:
            case "spam_level":
                return score is not None and score >= obj.level, frozenset(), f"spam_level>={obj.level:g}"
            case "virus":
                return bool(facts.viruses), frozenset(), "virus"
            case "symbol":
                return obj.name.lower() in facts.symbol_names, frozenset(), f"symbol={obj.name}"
            case "header":
                hit = regex is not None and any(regex.search(v) is not None for v in facts.header_values(obj.field))
                return hit, frozenset(), f"header:{obj.field}"
            case "size":
                size = facts.envelope.size
                hit = (obj.min_bytes is None or size >= obj.min_bytes) and (obj.max_bytes is None or size <= obj.max_bytes)
                return hit, frozenset(), "size"
            case "content_type":
                parts = frozenset(p.index for p in facts.parts if _any_full(regex, p.content_types))
            case "filename":
                parts = frozenset(p.index for p in facts.parts if p.filename and _any_full(regex, (p.filename,)))
            case "archive_content_type":
                parts = frozenset(p.index for p in facts.parts if _any_full(regex, p.archive_types))
            case "archive_filename":
                parts = frozenset(p.index for p in facts.parts if _any_full(regex, p.archive_names))
        return bool(parts), parts, f"{obj.type}={obj.pattern}"

    def match(self, facts: MessageFacts, score: float | None) -> WhatResult:
        """`score` is the recipient's effective spam score, None when a welcomelist discarded it."""
        hits = [self._object(i, facts, score) for i in range(len(self.objects))]
        matched = _combine((h[0] for h in hits), self.mode, self.invert, self.empty)
        if not matched:
            return WhatResult(False)
        if self.invert:
            return WhatResult(True, frozenset(), (f"not {self.name}",))
        parts = frozenset().union(*(h[1] for h in hits if h[0]))
        return WhatResult(True, parts, tuple(h[2] for h in hits if h[0]))


# --- When -----------------------------------------------------------------------------------------

def _in_frame(frame: TimeFrameWhen, zone: ZoneInfo, now: datetime) -> bool:
    local = now.astimezone(zone)
    day = WEEKDAYS[local.weekday()]
    clock = local.time().replace(tzinfo=None)
    if frame.start < frame.end:
        return day in frame.days and frame.start <= clock < frame.end
    # Spans midnight: the part after midnight belongs to the previous day's frame.
    if clock >= frame.start:
        return day in frame.days
    previous = WEEKDAYS[(local.weekday() - 1) % 7]
    return clock < frame.end and previous in frame.days


class CompiledWhen:
    def __init__(self, name: str, group: WhenGroup) -> None:
        self.name = name
        self.mode = group.mode
        self.invert = group.invert
        self.empty = not group.objects
        self.frames = [(o, ZoneInfo(o.timezone)) for o in group.objects]

    def match(self, now: datetime) -> bool:
        return _combine((_in_frame(f, z, now) for f, z in self.frames), self.mode, self.invert, self.empty)
