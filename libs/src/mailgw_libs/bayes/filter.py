"""Bayes over a store: classify token sets into a BAYES_xx symbol, learn and forget messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mailgw_libs.events import SymbolHit

from .classifier import BANDS, ClassifierConfig, Outcome, combine, is_trained, symbol
from .store import Label, LearnOutcome, TokenStore


@dataclass
class BayesFilter:
    store: TokenStore
    config: ClassifierConfig = field(default_factory=ClassifierConfig)
    bands: tuple[tuple[float, str, float], ...] = BANDS

    async def classify(self, tokens: Iterable[str]) -> Outcome | None:
        """The spam probability, or None while the database has less than the minimum training."""
        totals, counts = await self.store.lookup(tokens)
        if not is_trained(totals, self.config):
            return None
        return combine(counts, totals, self.config)

    async def symbol(self, tokens: Iterable[str]) -> SymbolHit | None:
        outcome = await self.classify(tokens)
        return None if outcome is None else symbol(outcome, self.bands)

    async def learn(self, key: str, tokens: Iterable[str], label: Label) -> LearnOutcome:
        return await self.store.learn(key, tokens, label)

    async def forget(self, key: str, tokens: Iterable[str]) -> LearnOutcome:
        return await self.store.forget(key, tokens)
