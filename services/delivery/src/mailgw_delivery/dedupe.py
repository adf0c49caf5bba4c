"""Ledger of completed sends in Redis: one key per (message id, recipient).

A key is written right after the relay accepted the message for that recipient; an action
(or retry) that is redelivered after a consumer restart skips the recipients found here, so
a message is never sent twice. A Redis failure while checking is a `TransientError`: the
input is redelivered later, nothing is sent and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
import redis.exceptions

from mailgw_libs.bus import TransientError

log = logging.getLogger("mailgw.delivery.ledger")


class DeliveryLedger:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int,
                 mark_attempts: int = 3, mark_pause_s: float = 0.2) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.mark_attempts = mark_attempts
        self.mark_pause_s = mark_pause_s

    def key(self, message_id: str, recipient: str) -> str:
        return f"{self.prefix}{message_id}:{recipient}"

    async def delivered(self, message_id: str, recipients: Sequence[str]) -> dict[str, str]:
        """The recipients already sent, each with the relay's stored answer."""
        if not recipients:
            return {}
        try:
            values = await self.client.mget([self.key(message_id, r) for r in recipients])
        except redis.exceptions.RedisError as exc:
            raise TransientError(f"delivery ledger unavailable: {exc!r}") from exc
        found: dict[str, str] = {}
        for recipient, value in zip(recipients, values, strict=True):
            if value is not None:
                found[recipient] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return found

    async def mark(self, message_id: str, sent: Iterable[tuple[str, str]]) -> bool:
        """Record (recipient, relay answer) pairs as sent. False if Redis refused every try.

        The message is already with the relay at this point, so a failure is logged and not
        raised: raising would redeliver the input and send it a second time right away.
        """
        pairs = list(sent)
        if not pairs:
            return True
        for attempt in range(1, self.mark_attempts + 1):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for recipient, answer in pairs:
                        pipe.set(self.key(message_id, recipient), answer, ex=self.ttl_s)
                    await pipe.execute()
                return True
            except redis.exceptions.RedisError as exc:
                if attempt == self.mark_attempts:
                    log.error("cannot record a completed send in the ledger; a redelivery would send it again",
                              extra={"message_id": message_id, "recipients": [r for r, _ in pairs],
                                     "error": repr(exc)})
                    return False
                await asyncio.sleep(self.mark_pause_s)
        return False

    async def ping(self) -> tuple[bool, str]:
        try:
            ok = bool(await self.client.ping())
        except redis.exceptions.RedisError as exc:
            return False, repr(exc)
        return ok, "PONG" if ok else "no answer"
