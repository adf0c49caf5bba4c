"""A process-local cache of token counts in front of a store.

Every message looks up hundreds to thousands of tokens, and most of them (common words, header tokens) recur
from message to message; Redis is single-threaded and shared by every antispam replica, so asking it for the
same counts again is what limits the scan rate. Counts change slowly (a few learned messages a minute against
thousands of scans), so answers at most `ttl_s` old are good enough for classifying: the whole cache is
dropped every `ttl_s` and when it grows past `max_entries`, and learning through this object drops the
tokens it changed at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .classifier import Totals
from .store import Label, LearnOutcome, StoreStats, TokenStore

ABSENT = (0, 0)


class CachedStore:
    """A `TokenStore` whose lookups are answered from memory when possible (others pass through)."""

    def __init__(self, store: TokenStore, ttl_s: float = 30.0, max_entries: int = 500_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            raise ValueError("ttl_s and max_entries must be positive")
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._counts: dict[str, tuple[int, int]] = {}
        self._totals: Totals | None = None
        self._epoch = clock()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._counts.clear()
        self._totals = None
        self._epoch = self._clock()

    async def lookup(self, tokens: Iterable[str]) -> tuple[Totals, dict[str, tuple[int, int]]]:
        if self._clock() - self._epoch >= self.ttl_s or len(self._counts) > self.max_entries:
            self.clear()
        wanted = set(tokens)
        missing = [t for t in wanted if t not in self._counts]
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        if missing or self._totals is None:
            totals, fetched = await self.store.lookup(missing)
            self._totals = totals
            for token in missing:
                self._counts[token] = fetched.get(token, ABSENT)
        counts = {t: c for t in wanted if (c := self._counts[t]) != ABSENT}
        return self._totals, counts

    def _forget_tokens(self, tokens: Iterable[str]) -> None:
        for token in tokens:
            self._counts.pop(token, None)
        self._totals = None

    async def learn(self, key: str, tokens: Iterable[str], label: Label) -> LearnOutcome:
        tokens = list(tokens)
        outcome = await self.store.learn(key, tokens, label)
        self._forget_tokens(tokens)
        return outcome

    async def forget(self, key: str, tokens: Iterable[str]) -> LearnOutcome:
        tokens = list(tokens)
        outcome = await self.store.forget(key, tokens)
        self._forget_tokens(tokens)
        return outcome

    async def expire(self, max_age_days: int, max_count: int, day: int | None = None) -> int:
        removed = await self.store.expire(max_age_days, max_count, day)
        self.clear()
        return removed

    async def stats(self) -> StoreStats:
        return await self.store.stats()

    async def reset(self) -> None:
        await self.store.reset()
        self.clear()
