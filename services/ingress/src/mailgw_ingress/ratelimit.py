"""Message rate limits per client IP and per envelope sender: fixed one-minute windows in Redis.

Each MAIL FROM counts one message (like Postfix's anvil `smtpd_client_message_rate_limit`). The
window number comes from an injectable clock; Redis expiry only collects old windows. When Redis
fails the limit fails open.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis.asyncio as aioredis

from mailgw_libs.failfast import Breaker

from .greylist import POLICY_FAIL_OPEN, STORE_ERRORS, Clock

log = logging.getLogger("mailgw.ingress.ratelimit")


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, prefix: str = "mailgw:ingress:", window_s: float = 60.0,
                 clock: Clock = time.time, breaker: Breaker | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window_s = window_s
        self.clock = clock
        self.breaker = breaker or Breaker()

    async def hit(self, counters: dict[str, tuple[str, int]]) -> str | None:
        """Count one message on each counter {kind: (identity, limit)}; the first kind over its limit, or None.

        A limit of 0 or less disables that counter.
        """
        active = {kind: (ident, limit) for kind, (ident, limit) in counters.items() if limit > 0}
        if not active:
            return None
        if self.breaker.is_open():
            POLICY_FAIL_OPEN.labels("rate").inc()
            return None
        window = int(self.clock() // self.window_s)
        keys = []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for kind, (ident, _) in active.items():
                digest = hashlib.sha256(ident.lower().encode("utf-8", "surrogateescape")).hexdigest()[:32]
                key = f"{self.prefix}rl:{kind}:{digest}:{window}"
                keys.append(key)
                pipe.incr(key)
                pipe.expire(key, int(self.window_s * 2) + 1)
            results = await pipe.execute()
        except STORE_ERRORS as exc:
            self.breaker.trip()
            POLICY_FAIL_OPEN.labels("rate").inc()
            log.warning("rate limits skipped, store unavailable: accepting", extra={"error": repr(exc)})
            return None
        for (kind, (_, limit)), count in zip(active.items(), results[::2], strict=True):
            if int(count) > limit:
                return kind
        return None
