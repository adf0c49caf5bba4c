"""Token stores: where Bayes keeps its counts. `RedisStore` for the gateway, `MemoryStore` for tests and benches.

Both implement `TokenStore`: per token the number of spam and ham messages it was learned from and the day it
was last learned (for expiry); the totals; the keys of learned messages with their label, so that learning
the same message again is a no-op, learning it with the other label moves its counts, and forgetting it
removes them. Tokens are keyed by a 64-bit hash, so a hostile token never makes a long key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Literal, Protocol

from mailgw_libs import mime

from .classifier import Totals

Label = Literal["spam", "ham"]
LearnOutcome = Literal["learned", "moved", "unchanged", "forgotten", "unknown"]
_FIELD: dict[str, str] = {"spam": "s", "ham": "h"}
SECONDS_PER_DAY = 86_400


def token_id(token: str) -> str:
    """16 hex characters naming a token in the store."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def message_key(msg: Message, raw: bytes) -> str:
    """Identity of a message for learning: its Message-ID and body bytes (headers added on the way, such as
    our own X-Spam headers or a relay's Received, do not change it)."""
    _, _, body = mime.split_head(raw)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(msg.get("Message-ID", "")).strip().encode("utf-8", "replace")[:1000])
    digest.update(b"\x00")
    digest.update(body)
    return digest.hexdigest()


def today() -> int:
    return int(time.time() // SECONDS_PER_DAY)


@dataclass(frozen=True)
class StoreStats:
    spam_messages: int
    ham_messages: int
    tokens: int
    learned_messages: int


class TokenStore(Protocol):
    async def lookup(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        """The totals and the (spam, ham) counts of the known tokens, in one round trip."""
        ...

    async def learn(self, key: str, tokens: Iterable[str], label: Label) -> LearnOutcome:
        """Learn a message (idempotent by `key`; the other label moves it)."""
        ...

    async def forget(self, key: str, tokens: Iterable[str]) -> LearnOutcome:
        """Undo the learning of a message ('unknown' when it was never learned)."""
        ...

    async def expire(self, max_age_days: int, max_count: int, day: int | None = None) -> int:
        """Drop tokens seen in at most `max_count` messages and not learned for `max_age_days` (how many), and
        the learned message ids older than `max_age_days`."""
        ...

    async def stats(self) -> StoreStats: ...

    async def reset(self) -> None: ...


class MemoryStore:
    """The same semantics in a dict (one process): unit tests and benchmarks."""

    def __init__(self, max_learned: int = 2_000_000) -> None:
        self.tokens: dict[str, list[int]] = {}  # id -> [spam, ham, day last learned]
        self.totals = {"s": 0, "h": 0}
        self.learned: dict[str, str] = {}
        self.learned_day: dict[str, int] = {}  # insertion order = learning order: the oldest go first
        self.max_learned = max_learned

    async def lookup(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        return self.lookup_now(tokens)

    def lookup_now(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        counts: dict[str, tuple[int, int]] = {}
        for token in tokens:
            entry = self.tokens.get(token_id(token))
            if entry:
                counts[token] = (entry[0], entry[1])
        return Totals(spam=self.totals["s"], ham=self.totals["h"]), counts

    def _add(self, ids: list[str], field: str, delta: int, day: int) -> None:
        index = 0 if field == "s" else 1
        for tid in ids:
            entry = self.tokens.setdefault(tid, [0, 0, day])
            entry[index] = max(0, entry[index] + delta)
            if delta > 0:
                entry[2] = day
            if entry[0] == 0 and entry[1] == 0:
                del self.tokens[tid]
        self.totals[field] = max(0, self.totals[field] + delta)

    async def learn(self, key: str, tokens: Iterable[str], label: Label) -> LearnOutcome:
        return self.learn_now(key, tokens, label)

    def learn_now(self, key: str, tokens: Iterable[str], label: Label, day: int | None = None) -> LearnOutcome:
        field = _FIELD[label]
        previous = self.learned.get(key)
        if previous == field:
            return "unchanged"
        ids = sorted({token_id(t) for t in tokens})
        if previous:
            self._add(ids, previous, -1, day or today())
        self._add(ids, field, 1, day or today())
        self.learned[key] = field
        self.learned_day.pop(key, None)
        self.learned_day[key] = day or today()
        while len(self.learned_day) > self.max_learned:
            oldest = next(iter(self.learned_day))
            del self.learned_day[oldest], self.learned[oldest]
        return "moved" if previous else "learned"

    async def forget(self, key: str, tokens: Iterable[str]) -> LearnOutcome:
        previous = self.learned.pop(key, None)
        self.learned_day.pop(key, None)
        if not previous:
            return "unknown"
        self._add(sorted({token_id(t) for t in tokens}), previous, -1, today())
        return "forgotten"

    async def expire(self, max_age_days: int, max_count: int, day: int | None = None) -> int:
        cutoff = (today() if day is None else day) - max_age_days
        for key in [k for k, learned in self.learned_day.items() if learned < cutoff]:
            del self.learned_day[key], self.learned[key]
        old = [tid for tid, (s, h, seen) in self.tokens.items() if s + h <= max_count and seen < cutoff]
        for tid in old:
            del self.tokens[tid]
        return len(old)

    async def stats(self) -> StoreStats:
        return StoreStats(self.totals["s"], self.totals["h"], len(self.tokens), len(self.learned))

    async def reset(self) -> None:
        self.tokens.clear()
        self.totals = {"s": 0, "h": 0}
        self.learned.clear()
        self.learned_day.clear()
