"""SPF (RFC 7208) at MAIL FROM with pyspf, on the gateway's own DNS resolver.

pyspf is synchronous, so each check runs in a worker thread. pyspf resolves through its module-level
`DNSLookup` hook (it ships two: pydns and dnspython, both on the system resolver); ours answers with the
resolver of the thread that runs the check, so the configured nameserver/port (MAILGW_DNS_*) is used and
checks with different resolvers can run side by side. Threads without one fall back to dnspython's default.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf

from mailgw_libs.resolver import make_sync_resolver

_local = threading.local()

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


def _thread_lookup(name: str, qtype: str, strict: bool | int = True, timeout: float = 30) -> list[tuple[Any, Any]]:
    """pyspf's DNS hook: ((name, type), value) pairs in the shapes pyspf expects for each record type."""
    resolver: dns.resolver.Resolver = getattr(_local, "resolver", None) or dns.resolver.get_default_resolver()
    try:
        answer = resolver.resolve(name, qtype, lifetime=min(timeout, resolver.lifetime), search=False)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise spf.TempError(f"DNS {type(exc).__name__}") from None
    except dns.exception.DNSException as exc:  # malformed names and the like: no such record
        if isinstance(exc, dns.resolver.LifetimeTimeout):
            raise spf.TempError("DNS timeout") from None
        return []
    out: list[tuple[Any, Any]] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _thread_lookup


@dataclass(frozen=True)
class SpfOutcome:
    result: str  # one of RESULTS
    domain: str  # the domain whose policy was checked (sender's, or HELO's for the null sender)
    identity: str  # "mailfrom" | "helo"
    explanation: str

    def received_spf(self, receiver: str, client_ip: str, sender: str, helo: str) -> str:
        """The Received-SPF header field (RFC 7208 9.1), CRLF-terminated."""
        comment = {
            "pass": f"domain of {self.domain} designates {client_ip} as permitted sender",
            "fail": f"domain of {self.domain} does not designate {client_ip} as permitted sender",
            "softfail": f"domain of transitioning {self.domain} does not designate {client_ip} as permitted sender",
            "neutral": f"{client_ip} is neither permitted nor denied by domain of {self.domain}",
            "none": f"domain of {self.domain} does not provide an SPF record",
            "temperror": f"temporary error in processing the SPF record of {self.domain}",
            "permerror": f"permanent error in processing the SPF record of {self.domain}",
        }[self.result]
        parts = [f"client-ip={client_ip}"]
        if self.identity == "mailfrom":
            parts.append(f'envelope-from="{_quote(sender)}"')
        parts += [f'helo="{_quote(helo)}"', f"receiver={_quote(receiver)}", f"identity={self.identity}"]
        return f"Received-SPF: {self.result} ({_quote(receiver)}: {_quote(comment)})\r\n\t{'; '.join(parts)}\r\n"


def _quote(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\()\r\n;')[:255]


class SpfChecker:
    """SPF of the envelope sender, or of the HELO name for the null sender (RFC 7208 2.3, 2.4)."""

    def __init__(self, nameservers: list[str] | None, port: int, timeout_s: float, receiver: str) -> None:
        self.resolver = make_sync_resolver(nameservers, port, timeout_s)
        self.timeout_s = timeout_s
        self.receiver = receiver

    async def check(self, client_ip: str, sender: str, helo: str) -> SpfOutcome:
        return await asyncio.to_thread(self._check, client_ip, sender, helo)

    def _check(self, client_ip: str, sender: str, helo: str) -> SpfOutcome:
        identity = "mailfrom" if sender else "helo"
        domain = (sender.rpartition("@")[2] if sender else helo).strip().rstrip(".").lower()
        if not domain or domain.startswith("["):
            return SpfOutcome("none", domain, identity, "no domain to check")
        _local.resolver = self.resolver
        try:
            query = spf.query(i=client_ip, s=sender or f"postmaster@{domain}", h=helo or domain,
                              receiver=self.receiver, timeout=self.timeout_s, querytime=4 * self.timeout_s)
            result, _code, explanation = query.check()
        except (ValueError, UnicodeError, spf.SPFError) as exc:
            # Hostile input pyspf cannot even parse (a bad IP, an undecodable name): no verdict.
            return SpfOutcome("none", domain, identity, f"not checked: {type(exc).__name__}")
        finally:
            _local.resolver = None
        result = str(result).lower()
        if result not in RESULTS:  # older pyspf spellings
            result = {"error": "temperror", "unknown": "permerror"}.get(result, "none")
        return SpfOutcome(result, domain, identity, str(explanation)[:200])
