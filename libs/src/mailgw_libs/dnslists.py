"""DNS block- and allowlists (DNSBL / DNSWL / URIBL) looked up with dnspython, in parallel, cached in Redis.

A list is a DNS zone: an IP is looked up as its reversed octets (IPv4) or nibbles (IPv6) under the zone, a
domain as `<domain>.<zone>`. An A answer in 127.0.0.0/8 means "listed"; NXDOMAIN (or no A record) means "not
listed". Lists return codes (127.0.0.2, 127.0.0.4, ...) that say why; `DnsList.answers` keeps only the codes
a deployment counts. Answers in 127.255.255.0/24 are the list refusing the query (e.g. through a public
resolver): they are failures, not listings.

Every lookup ends in one entry per list: listed (`codes`), not listed (no entry), or failed (`error`), so that
the caller applies its own policy to DNS trouble instead of mistaking it for "clean".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import redis.asyncio as aioredis

from .failfast import Breaker

log = logging.getLogger("mailgw.dnslists")

_LISTED_NET = ipaddress.ip_network("127.0.0.0/8")
_REFUSED_NET = ipaddress.ip_network("127.255.255.0/24")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_MAX_CODES = 16  # a hostile zone cannot make us store or report more than this


@dataclass(frozen=True)
class DnsList:
    """One list: its zone, its weight (negative for an allowlist) and what it looks up."""

    zone: str
    weight: float = 1.0
    kind: Literal["ip", "domain"] = "ip"
    # Codes that count as listed (e.g. {"127.0.0.2"}); None = any code in 127.0.0.0/8.
    answers: frozenset[str] | None = None

    def __post_init__(self) -> None:
        zone = domain_query(self.zone)
        if zone is None:
            raise ValueError(f"invalid DNS list zone: {self.zone!r}")
        object.__setattr__(self, "zone", zone)
        if self.kind not in ("ip", "domain"):
            raise ValueError(f"DNS list kind must be 'ip' or 'domain', not {self.kind!r}")


@dataclass(frozen=True)
class DnsListHit:
    """The answer of one list about one query: listed with `codes`, or `error` when the lookup failed."""

    dnslist: DnsList
    query: str
    codes: tuple[str, ...] = ()
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def weight(self) -> float:
        return 0.0 if self.failed else self.dnslist.weight


def listed(results: Sequence[DnsListHit]) -> list[DnsListHit]:
    return [r for r in results if not r.failed]


def failures(results: Sequence[DnsListHit]) -> list[DnsListHit]:
    return [r for r in results if r.failed]


def score(results: Sequence[DnsListHit]) -> float:
    """Sum of the weights of the lists that listed the query (failures count 0)."""
    return sum(r.weight for r in results)


def reversed_ip(ip: str) -> str:
    """The DNSBL query label of an address: `4.3.2.1` for 1.2.3.4, 32 nibbles for IPv6. Raises ValueError."""
    address = ipaddress.ip_address(ip.strip().strip("[]"))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def _valid_name(name: str) -> bool:
    try:
        dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return False
    return all(label and len(label) <= 63 for label in name.split("."))


def domain_query(domain: str) -> str | None:
    """The lookup form of a domain (lower case, IDNA), or None when it cannot be a DNS name."""
    name = domain.strip().rstrip(".").lower()
    if not name or len(name) > 253 or any(c.isspace() or c in "\\\"'();<>@" for c in name):
        return None
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return name if _HOSTNAME.fullmatch(name) and _valid_name(name) else None


class DnsListChecker:
    """Parallel lookups of one IP or domain in several lists, with a per-query timeout and a Redis cache.

    Positive and negative answers are cached for `cache_ttl` seconds; failures are never cached. A Redis
    failure only skips the cache (for a pause, via the breaker): lookups go on against DNS.
    """

    def __init__(self, resolver: dns.asyncresolver.Resolver, redis: aioredis.Redis | None, cache_ttl: float = 300.0,
                 timeout: float = 2.0, *, prefix: str = "mailgw:dnsl:", breaker: Breaker | None = None) -> None:
        self.resolver = resolver
        self.redis = redis
        self.cache_ttl = max(1, int(cache_ttl))
        self.timeout = timeout
        self.prefix = prefix
        self.breaker = breaker or Breaker()

    async def check_ip(self, ip: str, lists: Sequence[DnsList]) -> list[DnsListHit]:
        """Raises ValueError when `ip` is not an IP address."""
        label = reversed_ip(ip)
        return await self._check(label, [d for d in lists if d.kind == "ip"])

    async def check_domain(self, domain: str, lists: Sequence[DnsList]) -> list[DnsListHit]:
        """A name that cannot be looked up (hostile or malformed) is not listed anywhere."""
        label = domain_query(domain)
        if label is None:
            return []
        return await self._check(label, [d for d in lists if d.kind == "domain"])

    async def _check(self, label: str, lists: Sequence[DnsList]) -> list[DnsListHit]:
        if not lists:
            return []
        answers = await asyncio.gather(*(self._lookup(label, d) for d in lists))
        return [a for a in answers if a is not None]

    async def _lookup(self, label: str, dnslist: DnsList) -> DnsListHit | None:
        qname = f"{label}.{dnslist.zone}"
        if len(qname) > 253:
            return DnsListHit(dnslist, label, error="query name too long")
        cached = await self._cache_get(qname)
        if cached is None:
            try:
                codes = await self._resolve(qname)
            except _LookupFailed as exc:
                return DnsListHit(dnslist, label, error=str(exc))
            await self._cache_set(qname, codes)
        else:
            codes = cached
        if any(ipaddress.ip_address(c) in _REFUSED_NET for c in codes):
            return DnsListHit(dnslist, label, error=f"list refused the query ({','.join(codes)})")
        counted = tuple(c for c in codes if dnslist.answers is None or c in dnslist.answers)
        return DnsListHit(dnslist, label, counted) if counted else None

    async def _resolve(self, qname: str) -> tuple[str, ...]:
        try:
            answer = await asyncio.wait_for(self.resolver.resolve(qname, "A", lifetime=self.timeout),
                                            self.timeout + 0.5)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ()
        except (TimeoutError, dns.exception.Timeout):
            raise _LookupFailed("timeout") from None
        except dns.resolver.NoNameservers:
            raise _LookupFailed("no nameserver answered (SERVFAIL/REFUSED)") from None
        except dns.exception.DNSException as exc:
            raise _LookupFailed(f"dns error: {type(exc).__name__}") from None
        except OSError as exc:
            raise _LookupFailed(f"network error: {exc.strerror or exc!r}") from None
        codes = sorted({r.address for r in answer if ipaddress.ip_address(r.address) in _LISTED_NET})
        return tuple(codes[:_MAX_CODES])

    async def _cache_get(self, qname: str) -> tuple[str, ...] | None:
        if self.redis is None or self.breaker.is_open():
            return None
        try:
            value = await self.redis.get(self.prefix + qname)
        except Exception as exc:  # noqa: BLE001 - the cache is optional: any failure means "ask DNS"
            self._cache_failed(exc)
            return None
        if value is None:
            return None
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        codes = tuple(c for c in text.split(",") if c)
        try:
            for code in codes:
                ipaddress.ip_address(code)
        except ValueError:
            return None  # not ours or damaged: look it up again
        return codes

    async def _cache_set(self, qname: str, codes: tuple[str, ...]) -> None:
        if self.redis is None or self.breaker.is_open():
            return
        try:
            await self.redis.set(self.prefix + qname, ",".join(codes), ex=self.cache_ttl)
        except Exception as exc:  # noqa: BLE001 - the cache is optional
            self._cache_failed(exc)

    def _cache_failed(self, exc: Exception) -> None:
        log.warning("dns list cache unavailable", extra={"error": repr(exc)})
        self.breaker.trip()


class _LookupFailed(Exception):
    """A DNS lookup that gave no answer (timeout, SERVFAIL, network): not the same as 'not listed'."""
