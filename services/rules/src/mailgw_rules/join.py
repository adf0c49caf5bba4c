"""VerdictJoin: collects the verdicts of one message in Redis until all scorers answered or the deadline passed.

Keys (prefix `mailgw:rules:`):
  msg:<id>        hash: `received` (the mail.received frame, raw included: zstd-compressed),
                  `v:<scorer>` (verdict JSON)
  deadlines       sorted set: message id -> unix time when it must be decided
  lock:<id>       short-lived claim, so one replica decides a message at a time
  done:<id>       set once the action was published (idempotence for redelivered events)
A message is removed from `deadlines` only after its action was acknowledged by Kafka,
so a crash between claim and publish is retried by the sweeper once the lock expires.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from mailgw_libs.events import Verdict

PREFIX = "mailgw:rules:"
LOCK_TTL_S = 30
DONE_TTL_S = 7 * 24 * 3600


@dataclass
class JoinedMessage:
    message_id: str
    received_frame: bytes | None
    verdicts: dict[str, Verdict]
    traceparent: str = ""


class VerdictJoin:
    def __init__(self, redis: aioredis.Redis, scorers: list[str], deadline_s: float, state_ttl_s: int,
                 prefix: str = PREFIX) -> None:
        self.redis = redis
        self.scorers = list(scorers)
        self.deadline_s = deadline_s
        self.state_ttl_s = state_ttl_s
        self.prefix = prefix

    def _msg(self, message_id: str) -> str:
        return f"{self.prefix}msg:{message_id}"

    @property
    def _deadlines(self) -> str:
        return f"{self.prefix}deadlines"

    async def is_done(self, message_id: str) -> bool:
        return bool(await self.redis.exists(f"{self.prefix}done:{message_id}"))

    async def add_received(self, message_id: str, frame: bytes, received_ts: float, traceparent: str = "") -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._msg(message_id), mapping={"received": frame, "traceparent": traceparent})
        pipe.expire(self._msg(message_id), self.state_ttl_s)
        # NX: a redelivered mail.received must not push the deadline further out.
        pipe.zadd(self._deadlines, {message_id: received_ts + self.deadline_s}, nx=True)
        await pipe.execute()

    async def add_verdict(self, verdict: Verdict) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._msg(verdict.message_id), f"v:{verdict.scorer}", verdict.model_dump_json())
        pipe.expire(self._msg(verdict.message_id), self.state_ttl_s)
        await pipe.execute()

    async def load(self, message_id: str) -> JoinedMessage:
        fields: dict[bytes, bytes] = await self.redis.hgetall(self._msg(message_id))  # type: ignore[assignment]
        verdicts: dict[str, Verdict] = {}
        for key, value in fields.items():
            name = key.decode()
            if name.startswith("v:"):
                verdicts[name[2:]] = Verdict.model_validate_json(value)
        traceparent = fields.get(b"traceparent", b"").decode(errors="replace")
        return JoinedMessage(message_id, fields.get(b"received"), verdicts, traceparent)

    def is_complete(self, joined: JoinedMessage) -> bool:
        return joined.received_frame is not None and all(s in joined.verdicts for s in self.scorers)

    async def claim(self, message_id: str) -> bool:
        if await self.is_done(message_id):
            return False
        return bool(await self.redis.set(f"{self.prefix}lock:{message_id}", b"1", nx=True, ex=LOCK_TTL_S))

    async def release(self, message_id: str) -> None:
        await self.redis.delete(f"{self.prefix}lock:{message_id}")

    async def finish(self, message_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}done:{message_id}", b"1", ex=DONE_TTL_S)
        pipe.zrem(self._deadlines, message_id)
        pipe.delete(self._msg(message_id), f"{self.prefix}lock:{message_id}")
        await pipe.execute()

    async def due(self, now: float, limit: int = 100) -> list[str]:
        ids: list[bytes] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            self._deadlines, "-inf", now, start=0, num=limit)
        return [i.decode() for i in ids]

    async def drop_deadline(self, message_id: str) -> None:
        await self.redis.zrem(self._deadlines, message_id)

    async def pending(self) -> int:
        return int(await self.redis.zcard(self._deadlines))
