"""DNSBL at connection time (postscreen-style): weighted lists, a threshold, a policy for DNS failures.

The client's address is looked up in every list at once (while the pregreet test waits); the weights of the
lists that list it are summed (an allowlist has a negative weight) and the client is refused with
`554 5.7.1` naming the heaviest list when the sum reaches the threshold. A list that did not answer counts 0;
`on_dns_failure` says what happens when no list at all answered: "accept" (default: log and go on) or
"tempfail" (421, the client retries later).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from mailgw_libs.dnslists import DnsList, DnsListChecker, DnsListHit, failures, listed, score

log = logging.getLogger("mailgw.ingress.dnsbl")

DNSBL_FAILURES = Counter("mailgw_ingress_dnsbl_failures_total", "DNS list lookups that got no answer", ["zone"])

FailurePolicy = Literal["accept", "tempfail"]


@dataclass(frozen=True)
class DnsblDecision:
    score: float
    hits: tuple[DnsListHit, ...]
    failed: tuple[DnsListHit, ...]
    reply: str = ""  # empty: go on
    reason: str = ""

    @property
    def refused(self) -> bool:
        return bool(self.reply)

    @property
    def allowlisted(self) -> bool:
        return self.score < 0


class ConnectionDnsbl:
    def __init__(self, checker: DnsListChecker, lists: Sequence[DnsList], threshold: float,
                 on_dns_failure: FailurePolicy = "accept") -> None:
        self.checker = checker
        self.lists = [d for d in lists if d.kind == "ip"]
        self.threshold = threshold
        self.on_dns_failure = on_dns_failure

    async def decide(self, client_ip: str) -> DnsblDecision:
        try:
            results = await self.checker.check_ip(client_ip, self.lists)
        except ValueError:
            return DnsblDecision(0.0, (), ())  # not an IP (a unix socket in tests): nothing to look up
        hits, failed = tuple(listed(results)), tuple(failures(results))
        total = score(results)
        for f in failed:
            DNSBL_FAILURES.labels(f.dnslist.zone).inc()
            log.warning("dnsbl lookup failed", extra={"zone": f.dnslist.zone, "client_ip": client_ip,
                                                      "error": f.error})
        if hits and total >= self.threshold:
            worst = max(hits, key=lambda h: h.weight)
            names = ", ".join(h.dnslist.zone for h in hits if h.weight > 0)
            return DnsblDecision(total, hits, failed,
                                 f"554 5.7.1 Service unavailable; client host [{client_ip}] blocked using "
                                 f"{worst.dnslist.zone}", f"listed in {names} (score {total:g})")
        if failed and len(failed) == len(self.lists) and self.on_dns_failure == "tempfail":
            return DnsblDecision(total, hits, failed, "421 4.3.0 DNS list lookups failed, try again later",
                                 "dns lists unavailable")
        return DnsblDecision(total, hits, failed)
