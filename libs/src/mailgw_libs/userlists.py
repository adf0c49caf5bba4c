"""Per-user and per-domain welcomelists and blocklists of senders, kept in Redis.

An owner is either a user (a recipient address, `alice@example.com`) or a whole recipient domain
(`example.com`). Each owner has a welcomelist and a blocklist of sender patterns:

- `bob@example.org`      this exact sender address (case-insensitive);
- `*@example.org`        any sender of that domain (a bare `example.org` is stored as this);
- `*@*.example.org`      any sender of a subdomain of example.org (not example.org itself).

`match(recipient, sender)` answers "welcome", "block" or None. The most specific owner decides:
the user's own lists first, then the recipient domain's. Within one owner a welcomelist entry wins
over a blocklist entry (like PMG, which checks the welcomelist before the blocklist), so a user can
welcome one sender of a domain they block.

Storage: one Redis set per (owner, list), key `{prefix}:{list}:{user|domain}:{owner}`; a match is one
round trip (pipelined SMISMEMBER of the sender's candidate patterns in the four sets).
"""

from __future__ import annotations

import builtins
from typing import Literal

import redis.asyncio as aioredis

ListKind = Literal["welcome", "block"]
LIST_KINDS: tuple[ListKind, ...] = ("welcome", "block")

MAX_ADDRESS_LENGTH = 320  # RFC 5321 local part 64 + "@" + domain 255
MAX_DOMAIN_LENGTH = 255
MAX_DOMAIN_LABELS = 127


class InvalidEntry(ValueError):
    """An owner or sender pattern that is not an address, domain or supported wildcard."""


def _check_domain(domain: str, what: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain or len(domain) > MAX_DOMAIN_LENGTH:
        raise InvalidEntry(f"{what}: empty or overlong domain")
    labels = domain.split(".")
    if any(not label or len(label) > 63 for label in labels):
        raise InvalidEntry(f"{what}: bad domain {domain!r}")
    if any(ch.isspace() or ch in "@*<>\"\\,;()[]" or ord(ch) < 32 for ch in domain):
        raise InvalidEntry(f"{what}: bad character in domain {domain!r}")
    return domain


def _split_address(address: str, what: str) -> tuple[str, str]:
    address = address.strip()
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidEntry(f"{what}: address longer than {MAX_ADDRESS_LENGTH} characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEntry(f"{what}: {address!r} is not an address")
    if any(ch.isspace() or ord(ch) < 32 or ch in "<>" for ch in local):
        raise InvalidEntry(f"{what}: bad character in local part of {address!r}")
    return local.lower(), _check_domain(domain, what)


def normalise_user(address: str) -> str:
    local, domain = _split_address(address, "user")
    if local == "*":
        raise InvalidEntry("user: a wildcard is not a user; use a domain owner")
    return f"{local}@{domain}"


def normalise_domain(domain: str) -> str:
    return _check_domain(domain.lstrip("@"), "domain")


def normalise_pattern(pattern: str) -> str:
    """The stored form of a sender pattern: `local@domain`, `*@domain` or `*@*.domain`."""
    pattern = pattern.strip()
    if "@" not in pattern:
        return f"*@{_check_domain(pattern, 'sender pattern')}"
    local, domain = pattern.rsplit("@", 1)
    if local == "*":
        if domain.startswith("*."):
            return f"*@*.{_check_domain(domain[2:], 'sender pattern')}"
        return f"*@{_check_domain(domain, 'sender pattern')}"
    if "*" in local or "*" in domain:
        raise InvalidEntry(f"sender pattern: only '*@domain' and '*@*.domain' wildcards, not {pattern!r}")
    local, domain = _split_address(pattern, "sender pattern")
    return f"{local}@{domain}"


def sender_candidates(sender: str) -> list[str]:
    """The stored patterns that would match this sender, most specific first; [] if unparsable."""
    try:
        local, domain = _split_address(sender, "sender")
    except InvalidEntry:
        return []
    labels = domain.split(".")
    if len(labels) > MAX_DOMAIN_LABELS:
        return []
    candidates = [f"{local}@{domain}", f"*@{domain}"]
    candidates += [f"*@*.{'.'.join(labels[i:])}" for i in range(1, len(labels))]
    return candidates


class UserListStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "mailgw:userlists") -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, kind: ListKind, scope: Literal["user", "domain"], owner: str) -> str:
        if kind not in LIST_KINDS:
            raise InvalidEntry(f"list kind must be one of {LIST_KINDS}, not {kind!r}")
        return f"{self._prefix}:{kind}:{scope}:{owner}"

    @staticmethod
    def _owner(owner: str) -> tuple[Literal["user", "domain"], str]:
        """`alice@example.com` is a user owner, `example.com` (or `@example.com`) a domain owner."""
        if "@" in owner.strip().lstrip("@"):
            return "user", normalise_user(owner)
        return "domain", normalise_domain(owner)

    async def add(self, owner: str, kind: ListKind, pattern: str) -> str:
        """Add a sender pattern to an owner's list; returns the stored (normalised) pattern."""
        scope, who = self._owner(owner)
        stored = normalise_pattern(pattern)
        await self._redis.sadd(self._key(kind, scope, who), stored)
        return stored

    async def remove(self, owner: str, kind: ListKind, pattern: str) -> bool:
        scope, who = self._owner(owner)
        removed = await self._redis.srem(self._key(kind, scope, who), normalise_pattern(pattern))
        return bool(removed)

    async def list(self, owner: str, kind: ListKind) -> builtins.list[str]:
        scope, who = self._owner(owner)
        members = await self._redis.smembers(self._key(kind, scope, who))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def match(self, recipient: str, sender: str) -> ListKind | None:
        """"welcome", "block" or None for this (recipient, envelope sender)."""
        return (await self.match_many([recipient], sender))[0]

    async def match_many(self, recipients: builtins.list[str], sender: str) -> builtins.list[ListKind | None]:
        """`match` for every recipient of one message, in one pipelined round trip."""
        candidates = sender_candidates(sender)
        if not candidates or not recipients:
            return [None] * len(recipients)
        keyed: builtins.list[builtins.list[tuple[ListKind, str]] | None] = []
        for recipient in recipients:
            try:
                user = normalise_user(recipient)
            except InvalidEntry:
                keyed.append(None)
                continue
            domain = user.rpartition("@")[2]
            # Order = precedence: the user's lists before the domain's, welcome before block.
            keyed.append([("welcome", self._key("welcome", "user", user)), ("block", self._key("block", "user", user)),
                          ("welcome", self._key("welcome", "domain", domain)),
                          ("block", self._key("block", "domain", domain))])
        async with self._redis.pipeline(transaction=False) as pipe:
            for checks in keyed:
                for _, key in checks or []:
                    pipe.smismember(key, candidates)
            results = iter(await pipe.execute())
        answers: builtins.list[ListKind | None] = []
        for checks in keyed:
            answer: ListKind | None = None
            for kind, _ in checks or []:
                if any(next(results)) and answer is None:
                    answer = kind
            answers.append(answer)
        return answers
