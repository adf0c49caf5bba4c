"""The Bayes token store in Redis.

Keys (all under one hash tag, so that a Redis Cluster keeps a database in one slot and the scripts may
touch all its keys): `mailgw:bayes:{<db>}:t:<token id>` a hash per token (`s` spam count, `h` ham count,
`a` day last learned), `...:totals` (`s`, `h`: messages learned), `...:learned` (message key -> `s`/`h`),
`...:learned_at` (sorted set: message key scored by the day learned). The learned ids only serve to make
learning idempotent and forgetting possible, so they are bounded: at most `max_learned` (the oldest go first,
at learning time) and `expire` drops those older than its age limit; a message whose id was dropped is counted
again if learned again, which after months no longer matters to the counts.
`<db>` is the site database name, or `<site>/u/<user hash>` for a per-user database.

Learning and forgetting run as one Lua script (atomic: two processes learning the same message at once count
it once); a lookup is one script call returning every token's counts (one round trip, one reply string).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import cast

import redis.asyncio as aioredis

from .classifier import Totals
from .store import _FIELD, Label, LearnOutcome, StoreStats, today, token_id

# The token ids travel packed in one argument (16 hex characters each) and the lookup answers one string:
# with ~300 tokens per message, 300 arguments and a 600-element reply cost milliseconds of (pure Python)
# encoding and parsing per message, the packed forms microseconds. Token keys are not declared in KEYS, but
# they share the database's hash tag, so a Redis Cluster keeps them in the slot of the declared keys.
_SPLIT_IDS = """
local function ids(packed)
  local out = {}
  for i = 1, #packed, 16 do out[#out + 1] = string.sub(packed, i, i + 15) end
  return out
end
"""

# KEYS: totals, learned, learned_at; ARGV: message key, field (s|h), day, mode (learn|forget), token key prefix,
# packed ids, max learned ids kept
_LEARN = _SPLIT_IDS + """
local previous = redis.call('HGET', KEYS[2], ARGV[1])
local field, day, mode, prefix = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if mode == 'learn' and previous == field then return 'unchanged' end
if mode == 'forget' and not previous then return 'unknown' end
local tokens = ids(ARGV[6])
local function add(f, delta)
  local other = (f == 's') and 'h' or 's'
  for _, id in ipairs(tokens) do
    local key = prefix .. id
    local value = redis.call('HINCRBY', key, f, delta)
    if delta > 0 then
      redis.call('HSET', key, 'a', day)
    elseif value <= 0 then
      redis.call('HDEL', key, f)
      if redis.call('HEXISTS', key, other) == 0 then redis.call('DEL', key) end
    end
  end
  if redis.call('HINCRBY', KEYS[1], f, delta) < 0 then redis.call('HSET', KEYS[1], f, 0) end
end
if previous then add(previous, -1) end
if mode == 'learn' then
  add(field, 1)
  redis.call('HSET', KEYS[2], ARGV[1], field)
  redis.call('ZADD', KEYS[3], tonumber(day), ARGV[1])
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[7])
  if excess > 0 then
    for i, v in ipairs(redis.call('ZPOPMIN', KEYS[3], excess)) do
      if i % 2 == 1 then redis.call('HDEL', KEYS[2], v) end
    end
  end
  if previous then return 'moved' end
  return 'learned'
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'forgotten'
"""

# KEYS: learned, learned_at; ARGV: day cutoff (ids learned before it go). Answers how many went.
_EXPIRE_LEARNED = """
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 10000)
for _, key in ipairs(old) do redis.call('HDEL', KEYS[1], key) end
if #old > 0 then redis.call('ZREM', KEYS[2], unpack(old)) end
return #old
"""

# KEYS: totals; ARGV: token key prefix, packed ids. Answers "s,h;s1,h1;s2,h2;..." (empty for absent counts).
_LOOKUP = _SPLIT_IDS + """
local totals = redis.call('HMGET', KEYS[1], 's', 'h')
local out = {(totals[1] or '') .. ',' .. (totals[2] or '')}
for _, id in ipairs(ids(ARGV[2])) do
  local v = redis.call('HMGET', ARGV[1] .. id, 's', 'h')
  out[#out + 1] = (v[1] or '') .. ',' .. (v[2] or '')
end
return table.concat(out, ';')
"""

SCAN_BATCH = 1000
MAX_LEARNED = 2_000_000  # learned message ids kept per database (~100 bytes each in Redis)


def database_name(site: str = "default", user: str = "") -> str:
    """The site database, or the per-user database of `user` (an address: hashed, never in a key as is)."""
    safe_site = "".join(c for c in site if c.isalnum() or c in "-_.")[:64] or "default"
    if not user:
        return safe_site
    return f"{safe_site}/u/{hashlib.blake2b(user.strip().lower().encode(), digest_size=8).hexdigest()}"


def _int(value: bytes | str | None) -> int:
    return int(value) if value else 0


class RedisStore:
    def __init__(self, client: aioredis.Redis, database: str = "default", max_learned: int = MAX_LEARNED) -> None:
        if max_learned < 1:
            raise ValueError("max_learned must be at least 1")
        self.client = client
        self.max_learned = max_learned
        self.prefix = f"mailgw:bayes:{{{database}}}:"
        self._totals_key = self.prefix + "totals"
        self._learned_key = self.prefix + "learned"
        self._learned_at_key = self.prefix + "learned_at"
        self._token_prefix = self.prefix + "t:"
        self._learn = client.register_script(_LEARN)
        self._lookup = client.register_script(_LOOKUP)
        self._expire_learned = client.register_script(_EXPIRE_LEARNED)

    async def lookup(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        by_id = {token_id(t): t for t in tokens}
        ids = list(by_id)
        reply = await self._lookup(keys=[self._totals_key], args=[self._token_prefix, "".join(ids)])
        rows = (reply.decode() if isinstance(reply, bytes) else str(reply)).split(";")
        spam_total, ham_total = rows[0].split(",")
        counts: dict[str, tuple[int, int]] = {}
        for tid, row in zip(ids, rows[1:], strict=True):
            if row != ",":
                spam, ham = row.split(",")
                counts[by_id[tid]] = (_int(spam), _int(ham))
        return Totals(spam=_int(spam_total), ham=_int(ham_total)), counts

    async def _run(self, key: str, tokens: Iterable[str], field: str, mode: str) -> LearnOutcome:
        packed = "".join(sorted({token_id(t) for t in tokens}))
        outcome = await self._learn(keys=[self._totals_key, self._learned_key, self._learned_at_key],
                                    args=[key, field, today(), mode, self._token_prefix, packed, self.max_learned])
        text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        return cast(LearnOutcome, text)

    async def learn(self, key: str, tokens: Iterable[str], label: Label) -> LearnOutcome:
        return await self._run(key, tokens, _FIELD[label], "learn")

    async def forget(self, key: str, tokens: Iterable[str]) -> LearnOutcome:
        return await self._run(key, tokens, "", "forget")

    async def expire(self, max_age_days: int, max_count: int, day: int | None = None) -> int:
        """Drop rare old tokens (how many) and the learned message ids older than `max_age_days`."""
        cutoff = (today() if day is None else day) - max_age_days
        await self._date_untracked_ids(today() if day is None else day)
        while await self._expire_learned(keys=[self._learned_key, self._learned_at_key], args=[cutoff]):
            pass  # in batches of 10,000: one script call never blocks Redis for long
        removed = 0
        async for batch in self._scan_batches():
            async with self.client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hmget(key, "s", "h", "a")
                values = await pipe.execute()
            old = [key for key, (s, h, a) in zip(batch, values, strict=True)
                   if _int(s) + _int(h) <= max_count and _int(a) < cutoff]
            if old:
                await self.client.unlink(*old)
                removed += len(old)
        return removed

    async def _date_untracked_ids(self, day: int) -> None:
        """Ids learned before `learned_at` existed have no day: they get `day`, so that they expire too."""
        if await self.client.hlen(self._learned_key) <= await self.client.zcard(self._learned_at_key):
            return
        batch: dict[bytes, int] = {}
        async for key, _ in self.client.hscan_iter(self._learned_key, count=SCAN_BATCH):
            batch[key] = day
            if len(batch) >= SCAN_BATCH:
                await self.client.zadd(self._learned_at_key, batch, nx=True)
                batch = {}
        if batch:
            await self.client.zadd(self._learned_at_key, batch, nx=True)

    async def _scan_batches(self) -> AsyncIterator[list[bytes]]:
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=self.prefix + "t:*", count=SCAN_BATCH):
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def stats(self) -> StoreStats:
        totals = await self.client.hmget(self._totals_key, "s", "h")
        tokens = 0
        async for batch in self._scan_batches():
            tokens += len(batch)
        return StoreStats(spam_messages=_int(totals[0]), ham_messages=_int(totals[1]), tokens=tokens,
                          learned_messages=int(await self.client.hlen(self._learned_key)))

    async def reset(self) -> None:
        async for batch in self._scan_batches():
            await self.client.unlink(*batch)
        await self.client.unlink(self._totals_key, self._learned_key, self._learned_at_key)
