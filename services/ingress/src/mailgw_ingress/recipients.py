"""Recipient verification for inbound mail: static lists, LDAP directories, callout to the downstream server.

Each source answers KNOWN, UNKNOWN, TEMPFAIL, or None when it has no opinion on the recipient's domain. The
first KNOWN wins; otherwise any TEMPFAIL means 451 (never reject because a source is unreachable); otherwise an
UNKNOWN means 550 5.1.1; a recipient no source has an opinion on is accepted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Sequence
from typing import Protocol

import aiosmtplib
import redis.asyncio as aioredis

from mailgw_libs.directory import Directory, DirectoryUnavailable, normalise_address
from mailgw_libs.failfast import Breaker

from .greylist import STORE_ERRORS
from .relay import normalise_domain

log = logging.getLogger("mailgw.ingress.recipients")


class Known(enum.Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    TEMPFAIL = "tempfail"


class RecipientSource(Protocol):
    name: str

    async def verify(self, address: str, domain: str) -> Known | None: ...


class StaticRecipients:
    """Addresses (`user@domain`) and whole domains (`@domain`); verifies only the domains it mentions."""

    name = "static"

    def __init__(self, entries: Sequence[str]) -> None:
        self.addresses: set[str] = set()
        self.open_domains: set[str] = set()
        self.domains: set[str] = set()
        for entry in entries:
            text = entry.strip().lower()
            if text.startswith("@"):
                self.open_domains.add(normalise_domain(text[1:]))
                self.domains.add(normalise_domain(text[1:]))
            elif (address := normalise_address(text)) is not None:
                self.addresses.add(address)
                self.domains.add(address.rpartition("@")[2])

    async def verify(self, address: str, domain: str) -> Known | None:
        if domain not in self.domains:
            return None
        if domain in self.open_domains or address in self.addresses:
            return Known.KNOWN
        return Known.UNKNOWN


class DirectoryRecipients:
    """LDAP directories (cached in Redis, see mailgw_libs.directory); `domains` empty = every relay domain."""

    name = "ldap"

    def __init__(self, directories: Sequence[Directory], domains: Sequence[str] = ()) -> None:
        self.directories = list(directories)
        self.domains = frozenset(normalise_domain(d) for d in domains)

    async def verify(self, address: str, domain: str) -> Known | None:
        if not self.directories or (self.domains and domain not in self.domains):
            return None
        unavailable = False
        for directory in self.directories:
            try:
                if await directory.user_exists(address):
                    return Known.KNOWN
            except DirectoryUnavailable as exc:
                log.warning("recipient directory unavailable", extra={"error": str(exc)})
                unavailable = True
        return Known.TEMPFAIL if unavailable else Known.UNKNOWN


class CalloutRecipients:
    """Asks the downstream server with an RCPT probe (MAIL FROM:<>, RCPT TO, QUIT); answers cached in Redis.

    `hosts` maps a recipient domain to "host:port"; `default_host` serves the other domains ("" = no callout
    for them). 2xx = known, 5xx = unknown, anything else (4xx, refused connection, timeout) = tempfail.
    """

    name = "callout"

    def __init__(self, hosts: dict[str, str], default_host: str, helo: str, redis: aioredis.Redis | None, *,
                 prefix: str = "mailgw:ingress:", positive_ttl_s: float = 86400.0, negative_ttl_s: float = 3600.0,
                 timeout_s: float = 10.0, breaker: Breaker | None = None) -> None:
        self.hosts = {normalise_domain(d): h for d, h in hosts.items()}
        self.default_host = default_host
        self.helo = helo
        self.redis = redis
        self.prefix = prefix + "callout:"
        self.positive_ttl_s = max(1, int(positive_ttl_s))
        self.negative_ttl_s = max(1, int(negative_ttl_s))
        self.timeout_s = timeout_s
        self.breaker = breaker or Breaker()

    async def verify(self, address: str, domain: str) -> Known | None:
        target = self.hosts.get(domain, self.default_host)
        if not target:
            return None
        cached = await self._cached(address)
        if cached is not None:
            return cached
        answer = await self._probe(target, address)
        if answer is not Known.TEMPFAIL:
            await self._store(address, answer)
        return answer

    async def _probe(self, target: str, address: str) -> Known:
        host, _, port = target.rpartition(":")
        client = aiosmtplib.SMTP(hostname=host.strip("[]"), port=int(port), timeout=self.timeout_s,
                                 local_hostname=self.helo, start_tls=False, use_tls=False)
        try:
            await client.connect()
            await client.ehlo()
            await client.mail("")
            try:
                response = await client.rcpt(address)
                code = response.code
            except aiosmtplib.SMTPRecipientRefused as exc:
                code = exc.code
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as exc:
            log.warning("callout failed", extra={"target": target, "error": repr(exc)})
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                client.close()
            return Known.TEMPFAIL
        if 200 <= code < 300:
            return Known.KNOWN
        if 500 <= code < 600:
            return Known.UNKNOWN
        return Known.TEMPFAIL

    async def _cached(self, address: str) -> Known | None:
        if self.redis is None or self.breaker.is_open():
            return None
        try:
            value = await self.redis.get(self.prefix + address)
        except STORE_ERRORS as exc:
            self._store_failed(exc)
            return None
        if value is None:
            return None
        return {"1": Known.KNOWN, "0": Known.UNKNOWN}.get(value.decode() if isinstance(value, bytes) else value)

    async def _store(self, address: str, answer: Known) -> None:
        if self.redis is None or self.breaker.is_open():
            return
        known = answer is Known.KNOWN
        try:
            await self.redis.set(self.prefix + address, b"1" if known else b"0",
                                 ex=self.positive_ttl_s if known else self.negative_ttl_s)
        except STORE_ERRORS as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: BaseException) -> None:
        log.warning("callout cache unavailable", extra={"error": repr(exc)})
        self.breaker.trip()


class RecipientVerifier:
    def __init__(self, sources: Sequence[RecipientSource]) -> None:
        self.sources = list(sources)

    async def verify(self, address: str) -> tuple[Known, str]:
        """(answer, name of the deciding source); addresses are verified lower-case."""
        key = normalise_address(address)
        if key is None:
            return Known.UNKNOWN, "syntax"
        domain = key.rpartition("@")[2]
        tempfail = ""
        unknown = ""
        for source in self.sources:
            answer = await source.verify(key, domain)
            if answer is Known.KNOWN:
                return Known.KNOWN, source.name
            if answer is Known.TEMPFAIL and not tempfail:
                tempfail = source.name
            if answer is Known.UNKNOWN and not unknown:
                unknown = source.name
        if tempfail:
            return Known.TEMPFAIL, tempfail
        if unknown:
            return Known.UNKNOWN, unknown
        return Known.KNOWN, ""
