"""Greylisting: a first delivery attempt for an unknown triplet gets a temporary error.

The triplet is (client network, envelope sender, recipient): the client's /24 (IPv4) or /64
(IPv6), so that a sender's retry from another host of the same farm still matches. A retry
after `delay_s` and within `retry_window_s` of the first attempt passes and whitelists the
triplet for `whitelist_s` (renewed on every use). State lives in Redis; all times come from an
injectable clock, so tests need no sleeps. When Redis fails the check fails open: a greylist
outage must never stop mail.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter

from mailgw_libs.failfast import Breaker

from .relay import parse_ip

log = logging.getLogger("mailgw.ingress.greylist")

Clock = Callable[[], float]

GREYLIST_RESULTS = Counter("mailgw_ingress_greylist_total", "Greylisting decisions", ["result"])
POLICY_FAIL_OPEN = Counter(
    "mailgw_ingress_policy_fail_open_total", "Checks skipped (mail accepted) because their store failed", ["check"],
)

# Errors of the store that make a check fail open.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)

GREYLISTED_REPLY = "451 4.7.1 Greylisted, please try again later"


def client_network(client_ip: str, netmask_v4: int = 24, netmask_v6: int = 64) -> str:
    """The /24 (IPv4) or /64 (IPv6) network of a client (or the given netmasks), as text; the raw string if it
    is no IP."""
    ip = parse_ip(client_ip)
    if ip is None:
        return client_ip.strip().lower()
    prefix = netmask_v4 if ip.version == 4 else netmask_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class GreylistDecision:
    allowed: bool
    # "new", "early", "expired-retry", "passed", "whitelisted", "fail-open", "ipv6-exempt"
    state: str


class GreylistPolicy:
    def __init__(self, redis: aioredis.Redis, prefix: str = "mailgw:ingress:", delay_s: float = 180.0,
                 retry_window_s: float = 2 * 86400.0, whitelist_s: float = 36 * 86400.0,
                 clock: Clock = time.time, breaker: Breaker | None = None, *, netmask_v4: int = 24,
                 netmask_v6: int = 64, ipv6: bool = True) -> None:
        self.redis = redis
        self.prefix = prefix
        self.delay_s = delay_s
        self.retry_window_s = retry_window_s
        self.whitelist_s = whitelist_s
        self.clock = clock
        self.breaker = breaker or Breaker()
        self.netmask_v4 = netmask_v4
        self.netmask_v6 = netmask_v6
        # False: IPv6 clients are not greylisted (PMG's default: their addresses change too often to retry from).
        self.ipv6 = ipv6

    def triplet_key(self, client_ip: str, sender: str, rcpt: str) -> str:
        network = client_network(client_ip, self.netmask_v4, self.netmask_v6)
        triplet = f"{network}\0{sender.strip().lower()}\0{rcpt.strip().lower()}"
        # Hashed: addresses may be long or hold any byte; the key stays short and safe.
        return hashlib.sha256(triplet.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    async def check(self, client_ip: str, sender: str, rcpt: str) -> GreylistDecision:
        ip = parse_ip(client_ip)
        if not self.ipv6 and ip is not None and ip.version == 6:
            decision = GreylistDecision(True, "ipv6-exempt")
        elif self.breaker.is_open():
            POLICY_FAIL_OPEN.labels("greylist").inc()
            decision = GreylistDecision(True, "fail-open")
        else:
            try:
                decision = await self._check(self.triplet_key(client_ip, sender, rcpt))
            except STORE_ERRORS as exc:
                self.breaker.trip()
                POLICY_FAIL_OPEN.labels("greylist").inc()
                log.warning("greylisting skipped, store unavailable: accepting",
                            extra={"error": repr(exc), "client_ip": client_ip, "skip_s": self.breaker.pause_s})
                decision = GreylistDecision(True, "fail-open")
        GREYLIST_RESULTS.labels(decision.state).inc()
        return decision

    async def _check(self, triplet: str) -> GreylistDecision:
        now = self.clock()
        white_key, pending_key = f"{self.prefix}gl:w:{triplet}", f"{self.prefix}gl:p:{triplet}"
        white, pending = await self.redis.mget([white_key, pending_key])
        # The stored times decide, not Redis's TTLs (those only collect garbage), so the clock is injectable.
        if white is not None and now - float(white) <= self.whitelist_s:
            await self.redis.set(white_key, repr(now), ex=self._ttl(self.whitelist_s))  # renewed on use
            return GreylistDecision(True, "whitelisted")
        if pending is not None:
            first = float(pending)
            waited = now - first
            if waited < self.delay_s:
                return GreylistDecision(False, "early")
            if waited <= self.delay_s + self.retry_window_s:
                pipe = self.redis.pipeline(transaction=False)
                pipe.set(white_key, repr(now), ex=self._ttl(self.whitelist_s))
                pipe.delete(pending_key)
                await pipe.execute()
                return GreylistDecision(True, "passed")
        state = "new" if pending is None else "expired-retry"
        await self.redis.set(pending_key, repr(now), ex=self._ttl(self.delay_s + self.retry_window_s))
        return GreylistDecision(False, state)

    @staticmethod
    def _ttl(seconds: float) -> int:
        # A day of margin over the logical lifetime: Redis expiry is only garbage collection.
        return int(seconds) + 86400
