"""Relay control: who may send mail to whom through this gateway.

This layer runs before any other policy and nothing overrides it. A recipient is
accepted when its domain is a relay domain (inbound mail) or when the client is in a
trusted network (outbound mail). Addresses that try classic relay tricks (`%`-hack,
`!` paths, source routes, IP literals, quoted local parts with `@`) are refused
whatever the domain, because a downstream server may interpret them as routing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailgw_libs.events import Direction

_ROUTING_CHARS = set("%!:,[]\\\"'<>() ;\t")


def normalise_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


@dataclass(frozen=True)
class RelayDecision:
    allowed: bool
    direction: Direction
    reason: str = ""


def parse_ip(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address (an IPv4-mapped IPv6 address as IPv4; a zone id dropped), None if it is no IP."""
    try:
        ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RelayPolicy:
    def __init__(self, relay_domains: list[str], trusted_networks: list[str]) -> None:
        self.relay_domains = frozenset(normalise_domain(d) for d in relay_domains if d.strip())
        self.trusted_networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_networks)

    def is_trusted(self, client_ip: str) -> bool:
        ip = parse_ip(client_ip)
        return ip is not None and any(ip in net for net in self.trusted_networks)

    def direction(self, client_ip: str) -> Direction:
        return Direction.OUTBOUND if self.is_trusted(client_ip) else Direction.INBOUND

    @staticmethod
    def split_address(address: str) -> tuple[str, str] | None:
        """(local, domain) of a plain address, or None for anything that could route elsewhere."""
        if address.count("@") != 1:
            return None
        local, domain = address.split("@")
        if not local or not domain or any(c in _ROUTING_CHARS or not c.isprintable() for c in address):
            return None  # routing characters, spaces and control characters never reach a downstream server
        if domain.startswith("[") or not all(label for label in normalise_domain(domain).split(".")):
            return None
        return local, normalise_domain(domain)

    def check_recipient(self, client_ip: str, rcpt: str) -> RelayDecision:
        direction = self.direction(client_ip)
        parts = self.split_address(rcpt)
        if parts is None:
            return RelayDecision(False, direction, "recipient address not allowed (routing characters or IP literal)")
        _, domain = parts
        if domain in self.relay_domains:
            return RelayDecision(True, direction)
        if direction is Direction.OUTBOUND:
            return RelayDecision(True, Direction.OUTBOUND)
        return RelayDecision(False, direction, "relay denied")
