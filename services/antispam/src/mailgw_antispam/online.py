"""The checks that need DNS, built from the settings: authentication (SPF/DKIM/DMARC/ARC, on by default
in the service) and DNS lists (DNSBL/DNSWL/URIBL, off by default). `mailgw scan` runs both only with
--network. Returns symbols and the headers to add to the delivered mail (Authentication-Results).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from mailgw_libs import mime
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.events import HeaderChange, SymbolHit
from mailgw_libs.resolver import make_resolver

from .auth import Authenticator, AuthResult
from .network import NamedList, NetworkChecker, parse_networks
from .settings import AntispamSettings, DnsListSetting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Envelope:
    """What the ingress knew about the message (empty outside the pipeline)."""

    message_id: str = ""
    client_ip: str = ""
    spf: str = ""
    spf_domain: str = ""


def _named(settings: list[DnsListSetting], kind: str) -> list[NamedList]:
    return [NamedList(s.symbol, DnsList(s.zone, s.weight, "ip" if kind == "ip" else "domain",
                                        frozenset(s.answers) or None)) for s in settings]


class OnlineChecks:
    def __init__(self, authenticator: Authenticator | None, network: NetworkChecker | None) -> None:
        self.authenticator = authenticator
        self.network = network

    @classmethod
    def from_settings(cls, settings: AntispamSettings, redis: aioredis.Redis | None = None,
                      network: bool | None = None, auth: bool | None = None) -> OnlineChecks | None:
        use_network = settings.network_checks if network is None else network
        use_auth = settings.auth_checks if auth is None else auth
        if not use_network and not use_auth:
            return None
        resolver = make_resolver(settings.dns_nameservers, settings.dns_port, settings.dns_timeout)
        authenticator = Authenticator(resolver, settings.authserv_id) if use_auth else None
        checker = None
        if use_network:
            ip_lists = _named(settings.dnsbl_lists, "ip") + _named(settings.dnswl_lists, "ip")
            domain_lists = _named(settings.uribl_lists, "domain")
            dnsl = DnsListChecker(resolver, redis, settings.dnsl_cache_ttl_s, settings.dnsl_timeout_s,
                                  prefix=settings.redis_prefix + "dnsl:")
            checker = NetworkChecker(dnsl, ip_lists, domain_lists, parse_networks(settings.trusted_networks))
        return cls(authenticator, checker)

    async def run(self, raw: bytes, envelope: Envelope = Envelope()) -> tuple[list[SymbolHit], list[HeaderChange]]:
        hits: list[SymbolHit] = []
        headers: list[HeaderChange] = []
        jobs: list[Coroutine[Any, Any, AuthResult | list[SymbolHit]]] = []
        if self.authenticator is not None:
            jobs.append(self.authenticator.check(raw, envelope.spf, envelope.spf_domain, envelope.message_id))
        if self.network is not None:
            head = mime.parse_headers_only(raw)
            received = [str(v) for v in head.get_all("Received") or []]
            jobs.append(self.network.check(raw, received, envelope.client_ip))
        for result in await asyncio.gather(*jobs):
            if isinstance(result, list):
                hits += result
            else:
                hits += result.hits
                headers.append(result.header_change())
        return hits, headers
