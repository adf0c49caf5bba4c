"""Verdicts cached by content: sha256 of the raw message -> the symbols and viruses found, in Redis.

A campaign of identical messages is scanned once. The key includes the layer-2 fingerprint
(settings and rules), so a changed configuration never serves an old answer. The cache is an
optimisation only: a Redis failure is a miss (and the store is skipped for `pause_s`), never an
error of the message. Verdicts of failed scans (clamd unreachable, attachment scan incomplete)
are not stored: the next identical message is scanned again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from mailgw_libs.events import AttachmentInfo, SymbolHit
from mailgw_libs.failfast import Breaker

log = logging.getLogger("mailgw.antivirus.cache")

_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class CachedVerdict:
    symbols: list[SymbolHit]
    viruses: list[str]
    attachments: list[AttachmentInfo]


class VerdictCache:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int, fingerprint: str,
                 pause_s: float = 5.0) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.fingerprint = fingerprint
        self.breaker = Breaker(pause_s)

    def key(self, raw: bytes) -> str:
        # v2: entries carry the attachment inventory too.
        return f"{self.prefix}verdict:v2:{self.fingerprint}:{hashlib.sha256(raw).hexdigest()}"

    def _available(self) -> bool:
        return not self.breaker.is_open()

    def _failed(self, what: str, exc: BaseException) -> None:
        self.breaker.trip()
        log.warning("verdict cache unavailable", extra={"operation": what, "error": repr(exc)})

    async def get(self, key: str) -> CachedVerdict | None:
        if not self._available():
            return None
        try:
            value = await self.client.get(key)
        except _ERRORS as exc:
            self._failed("get", exc)
            return None
        if value is None:
            return None
        try:
            data = json.loads(value)
            return CachedVerdict([SymbolHit.model_validate(s) for s in data["symbols"]], list(data["viruses"]),
                                 [AttachmentInfo.model_validate(a) for a in data.get("attachments", [])])
        except (ValueError, KeyError, TypeError):
            return None  # an entry we cannot read is a miss; the scan overwrites it

    async def put(self, key: str, symbols: list[SymbolHit], viruses: list[str],
                  attachments: list[AttachmentInfo] | None = None) -> None:
        if not self._available():
            return
        value = json.dumps({"symbols": [s.model_dump(mode="json") for s in symbols], "viruses": viruses,
                            "attachments": [a.model_dump(mode="json") for a in attachments or []]})
        try:
            await self.client.set(key, value, ex=self.ttl_s)
        except _ERRORS as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        await self.client.aclose()
