"""One way to build the DNS resolver every network check uses (DNSBL, SPF, sender domain, rDNS).

Deployments point the gateway at their own caching resolver (a public resolver is refused by most DNS
lists); tests point it at the local NSD. `nameservers=None` keeps the system's /etc/resolv.conf.
Settings shared by every service: MAILGW_DNS_NAMESERVERS (JSON list), MAILGW_DNS_PORT, MAILGW_DNS_TIMEOUT.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.resolver

DEFAULT_TIMEOUT_S = 5.0
# Answers kept in-process for their TTL: the same client, sender domain and list entries recur from
# connection to connection, and each query saved is a round trip and a parse on the event loop.
CACHE_ENTRIES = 50_000


def _configure(resolver: dns.resolver.BaseResolver, nameservers: list[str] | None, port: int, timeout: float) -> None:
    if nameservers is not None:
        if not nameservers:
            raise ValueError("nameservers: give at least one address, or None for the system resolver")
        resolver.nameservers = list(nameservers)
        resolver.port = port
    # `lifetime` bounds one whole query including retries to other nameservers; `timeout` one attempt.
    resolver.lifetime = timeout
    resolver.timeout = timeout


def make_resolver(nameservers: list[str] | None = None, port: int = 53,
                  timeout: float = DEFAULT_TIMEOUT_S) -> dns.asyncresolver.Resolver:
    """An asyncio resolver: the given nameservers on `port`, or the system's when `nameservers` is None."""
    resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
    _configure(resolver, nameservers, port, timeout)
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    return resolver


def make_sync_resolver(nameservers: list[str] | None = None, port: int = 53,
                       timeout: float = DEFAULT_TIMEOUT_S) -> dns.resolver.Resolver:
    """The same, blocking, for synchronous libraries run in an executor (pyspf)."""
    resolver = dns.resolver.Resolver(configure=nameservers is None)
    _configure(resolver, nameservers, port, timeout)
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    return resolver
