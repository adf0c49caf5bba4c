"""OCR text by image hash in Redis: an image spam campaign sends the same picture thousands of times.

Key: `<prefix>text:<fingerprint>:<sha256 of the image bytes>`; the fingerprint covers what changes the
text read (languages, preprocessing bounds), so a new configuration never serves an old reading. Only
successful readings are stored (a timeout may succeed next time). The cache is an optimisation: Redis
trouble is a miss, and Redis is skipped for `pause_s` after a failure (shared Breaker).
"""

from __future__ import annotations

import hashlib
import logging

import redis.asyncio as aioredis
import redis.exceptions

from mailgw_libs.failfast import Breaker

log = logging.getLogger("mailgw.ocr.cache")

_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class TextCache:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int, config_fingerprint: str,
                 pause_s: float = 5.0) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.config_fingerprint = config_fingerprint
        self.breaker = Breaker(pause_s)

    def key(self, image: bytes) -> str:
        return f"{self.prefix}text:{self.config_fingerprint}:{hashlib.sha256(image).hexdigest()}"

    def _failed(self, what: str, exc: BaseException) -> None:
        self.breaker.trip()
        log.warning("OCR cache unavailable", extra={"operation": what, "error": repr(exc)})

    async def get(self, image: bytes) -> str | None:
        if self.breaker.is_open():
            return None
        try:
            value = await self.client.get(self.key(image))
        except _ERRORS as exc:
            self._failed("get", exc)
            return None
        if value is None:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    async def put(self, image: bytes, text: str) -> None:
        if self.breaker.is_open():
            return
        try:
            await self.client.set(self.key(image), text.encode("utf-8"), ex=self.ttl_s)
        except _ERRORS as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        await self.client.aclose()
