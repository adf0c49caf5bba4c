"""SMTP welcomelist and blocklist by client IP or network, sender address or sender domain.

Entries: `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32` (client); `user@example.org` (sender address);
`example.org` or `@example.org` (sender domain, exact); `.example.org` (the domain's subdomains and itself).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .relay import normalise_domain, parse_ip

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AccessList:
    networks: tuple[IPNetwork, ...] = ()
    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    parent_domains: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: list[str]) -> AccessList:
        networks: list[IPNetwork] = []
        addresses: set[str] = set()
        domains: set[str] = set()
        parents: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            local, at, domain = entry.rpartition("@")
            if at and local:
                addresses.add(f"{local.lower()}@{normalise_domain(domain)}")
            elif domain.startswith("."):
                parents.append(normalise_domain(domain.lstrip(".")))
            else:
                domains.add(normalise_domain(domain))
        return cls(tuple(networks), frozenset(addresses), frozenset(domains), tuple(parents))

    def __bool__(self) -> bool:
        return bool(self.networks or self.addresses or self.domains or self.parent_domains)

    def client_listed(self, client_ip: str) -> bool:
        ip = parse_ip(client_ip)
        return ip is not None and any(ip in net for net in self.networks)

    def sender_listed(self, sender: str) -> bool:
        local, at, domain = sender.strip().rpartition("@")
        if not at or not domain:
            return False
        domain = normalise_domain(domain)
        if f"{local.lower()}@{domain}" in self.addresses or domain in self.domains:
            return True
        return any(domain == p or domain.endswith("." + p) for p in self.parent_domains)

    def listed(self, client_ip: str, sender: str | None) -> bool:
        return self.client_listed(client_ip) or (sender is not None and self.sender_listed(sender))
