"""DNS checks of the client and the envelope: unknown sender domain, HELO name, reverse DNS.

Each check answers None (go on) or a `Refusal` with the SMTP reply; a DNS failure is a temporary (4xx) refusal
only where the check would otherwise reject, so DNS trouble never turns into a permanent rejection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from .relay import normalise_domain, parse_ip

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_ADDRESS_LITERAL = re.compile(r"\[(?:IPv6:)?[0-9a-fA-F:.]+\]")

RdnsMode = Literal["off", "ptr", "fcrdns"]


@dataclass(frozen=True)
class Refusal:
    code: int
    reply: str
    reason: str
    check: str


class DnsTrouble(Exception):
    """No usable answer (timeout, SERVFAIL): not the same as "does not exist"."""


async def _resolve(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str] | None:
    """Record texts; [] for no records of that type; None for NXDOMAIN. Raises DnsTrouble."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoAnswer:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise DnsTrouble(type(exc).__name__) from None
    except dns.exception.DNSException:  # a name DNS cannot carry: nothing there
        return None
    return [r.to_text() for r in answer]


def valid_hostname(name: str) -> bool:
    name = normalise_domain(name)
    if not name or len(name) > 253:
        return False
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def address_literal_ip(helo: str) -> str | None:
    if not _ADDRESS_LITERAL.fullmatch(helo):
        return None
    ip = parse_ip(helo[1:-1].removeprefix("IPv6:"))
    return str(ip) if ip is not None else None


class HostChecks:
    def __init__(self, resolver: dns.asyncresolver.Resolver, *, own_names: list[str], own_ips: list[str],
                 helo_checks: bool = False, helo_require_fqdn: bool = False,
                 reject_unknown_sender_domain: bool = False, rdns: RdnsMode = "off") -> None:
        self.resolver = resolver
        self.own_names = frozenset(normalise_domain(n) for n in own_names if n)
        self.own_ips = frozenset(str(ip) for ip in (parse_ip(a) for a in own_ips) if ip is not None)
        self.helo_checks = helo_checks
        self.helo_require_fqdn = helo_require_fqdn
        self.reject_unknown_sender_domain = reject_unknown_sender_domain
        self.rdns = rdns

    def check_helo(self, helo: str) -> Refusal | None:
        if not self.helo_checks:
            return None
        literal = address_literal_ip(helo)
        if helo.startswith("["):
            if literal is None:
                return Refusal(501, f"501 5.5.2 <{_show(helo)}>: Helo command rejected: invalid ip address",
                               "invalid HELO address literal", "helo")
            if literal in self.own_ips:
                return Refusal(550, "550 5.7.1 Helo command rejected: that is my address",
                               "HELO is our own address", "helo")
            return None
        if not valid_hostname(helo):
            return Refusal(501, f"501 5.5.2 <{_show(helo)}>: Helo command rejected: invalid hostname",
                           "invalid HELO hostname", "helo")
        name = normalise_domain(helo)
        if name in self.own_names:
            return Refusal(550, "550 5.7.1 Helo command rejected: that is my name", "HELO is our own name", "helo")
        if self.helo_require_fqdn and "." not in name:
            return Refusal(504, f"504 5.5.2 <{_show(helo)}>: Helo command rejected: need fully-qualified hostname",
                           "HELO not fully qualified", "helo")
        return None

    async def check_sender_domain(self, sender: str) -> Refusal | None:
        if not self.reject_unknown_sender_domain or not sender or "@" not in sender:
            return None
        domain = normalise_domain(sender.rpartition("@")[2])
        if domain.startswith("["):
            return None  # an address literal has no DNS to check
        shown = _show(sender)
        try:
            mx = await _resolve(self.resolver, domain, "MX")
            if mx is None:
                return Refusal(550, f"550 5.1.8 <{shown}>: Sender address rejected: Domain not found",
                               "sender domain does not exist", "sender_domain")
            if mx:
                if all(r.split()[-1] == "." for r in mx):  # RFC 7505 null MX: the domain accepts no mail
                    return Refusal(550, f"550 5.7.27 <{shown}>: Sender address rejected: Domain accepts no mail",
                                   "sender domain has a null MX", "sender_domain")
                return None
            a, aaaa = await asyncio.gather(_resolve(self.resolver, domain, "A"),
                                           _resolve(self.resolver, domain, "AAAA"))
        except DnsTrouble as exc:
            return Refusal(450, f"450 4.1.8 <{shown}>: Sender address rejected: Domain not found (DNS: {exc})",
                           f"sender domain lookup failed ({exc})", "sender_domain")
        if a or aaaa:
            return None
        return Refusal(550, f"550 5.1.8 <{shown}>: Sender address rejected: Domain has no MX or address record",
                       "sender domain has no MX/A/AAAA", "sender_domain")

    async def reverse_name(self, client_ip: str) -> tuple[str, bool]:
        """(first PTR name, forward-confirmed) of the client; ("", False) without PTR. Raises DnsTrouble."""
        ip = parse_ip(client_ip)
        if ip is None:
            return "", False
        names = await _resolve(self.resolver, dns.reversename.from_address(str(ip)).to_text(), "PTR")
        if not names:
            return "", False
        names = [n.rstrip(".").lower() for n in names[:10]]
        rdtype = "A" if ip.version == 4 else "AAAA"
        for name in names:
            try:
                addresses = await _resolve(self.resolver, name, rdtype)
            except DnsTrouble:
                continue
            if addresses and any(ipaddress.ip_address(a) == ip for a in addresses):
                return name, True
        return names[0], False

    def check_rdns(self, client_ip: str, rdns: tuple[str, bool] | None) -> Refusal | None:
        """`rdns` is reverse_name's answer, None when that lookup failed (DNS trouble)."""
        if self.rdns == "off":
            return None
        if rdns is None:
            return Refusal(450, f"450 4.7.25 Client host rejected: cannot find your hostname, [{client_ip}]",
                           "reverse DNS lookup failed", "rdns")
        name, confirmed = rdns
        if not name:
            return Refusal(550, f"550 5.7.25 Client host rejected: cannot find your reverse hostname, [{client_ip}]",
                           "no PTR record", "rdns")
        if self.rdns == "fcrdns" and not confirmed:
            return Refusal(550, f"550 5.7.25 Client host rejected: cannot find your hostname, [{client_ip}]",
                           f"PTR {name} does not resolve back to the client", "rdns")
        return None


def _show(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in "<>\r\n")[:256]
