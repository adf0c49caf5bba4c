"""Network checks (off by default): DNSBL and DNSWL on the first untrusted relay, URIBL on link domains.

The relay is the first hop of the Received chain, read from the top, whose address is outside the
trusted networks (our own relays): the machine that handed the message to us, or to the last relay
we trust. Link domains are the registered domains (public suffix list) of the message's URIs. Lookups
run in parallel through `mailgw_libs.dnslists.DnsListChecker` (timeouts, Redis cache); a list that
fails to answer gives no symbol (DNS trouble is not evidence either way).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

from mailgw_libs.dnslists import DnsList, DnsListChecker, DnsListHit
from mailgw_libs.events import SymbolHit

from .rules.message import build as build_view
from .rules.uris import host_of, is_ip, registered_domain

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URI_DOMAINS = 20
MAX_RECEIVED = 30
# `from helo (rdns [1.2.3.4])`, `from [1.2.3.4]`, `(1.2.3.4)`: the address the receiving side saw.
_RECEIVED_IP = re.compile(r"[\[(]\s*(?:IPv6:)?([0-9a-f:.]{7,45})\s*[\])]", re.IGNORECASE)


@dataclass(frozen=True)
class NamedList:
    """A DNS list with the symbol its listings get (RBL_ZEN, URIBL_DBL, RCVD_IN_DNSWL ...)."""

    symbol: str
    dnslist: DnsList


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values]


# Addresses no DNS list knows: private, shared (CGNAT), loopback, link-local. (Not Python's is_private,
# which also counts the documentation ranges the tests use as public relays.)
_LOCAL_NETS = parse_networks(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                              "169.254.0.0/16", "0.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128", "::/128"])


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_multicast or ip.is_unspecified or any(ip in net for net in _LOCAL_NETS))


def first_untrusted_relay(received: list[str], trusted: list[Network], client_ip: str = "") -> str:
    """The first address, from the top of the Received chain (or the connecting client), that is public
    and outside `trusted`; '' when every hop is trusted or private."""
    candidates = [client_ip] if client_ip else []
    for value in received[:MAX_RECEIVED]:
        head = value.split(";")[0]
        from_part = head.split(" by ")[0]  # the sending side of the hop, not our own `by` clause
        candidates.extend(_RECEIVED_IP.findall(from_part)[:1])
    for text in candidates:
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            continue
        if any(ip in net for net in trusted):
            continue
        return str(ip) if _is_public(ip) else ""
    return ""


def uri_domains(raw: bytes, max_chars: int = 500_000) -> list[str]:
    """Registered domains of the message's links, in order, without duplicates. CPU: run in an executor."""
    view = build_view(raw, max_chars)
    out: dict[str, None] = {}
    for uri in view.uris:
        host = host_of(uri.decode("utf-8", "replace"))
        if host and not is_ip(host):
            out.setdefault(registered_domain(host))
        if len(out) >= MAX_URI_DOMAINS:
            break
    return list(out)


class NetworkChecker:
    def __init__(self, checker: DnsListChecker, ip_lists: list[NamedList], domain_lists: list[NamedList],
                 trusted: list[Network]) -> None:
        self.checker = checker
        self.ip_lists = ip_lists
        self.domain_lists = domain_lists
        self.trusted = trusted
        self._symbols = {n.dnslist: n.symbol for n in ip_lists + domain_lists}

    async def check(self, raw: bytes, received: list[str], client_ip: str = "") -> list[SymbolHit]:
        tasks = []
        relay = first_untrusted_relay(received, self.trusted, client_ip)
        if relay and self.ip_lists:
            tasks.append(self.checker.check_ip(relay, [n.dnslist for n in self.ip_lists]))
        if self.domain_lists:
            domains = await asyncio.get_running_loop().run_in_executor(None, uri_domains, raw)
            lists = [n.dnslist for n in self.domain_lists]
            tasks.extend(self.checker.check_domain(d, lists) for d in domains)
        results = await asyncio.gather(*tasks)
        return self._hits([hit for batch in results for hit in batch])

    def _hits(self, results: list[DnsListHit]) -> list[SymbolHit]:
        found: dict[str, SymbolHit] = {}
        for hit in results:
            if hit.failed:
                continue
            symbol = self._symbols[hit.dnslist]
            if symbol not in found:  # one hit per list, however many domains it lists
                found[symbol] = SymbolHit(name=symbol, score=hit.dnslist.weight,
                                          detail=f"{hit.query} listed ({', '.join(hit.codes[:3])})")
        return list(found.values())
