"""What the central configuration (`mailgw.config`) decides for antispam, as one object swapped at once.

`scoring.spam_threshold`, `scoring.symbol_scores` and `scoring.bayes` are followed live. Precedence (see
docs/configuration.md "Who reads what"): a field the configuration gives wins; while `mailgw.config` holds no
version, the environment (`MAILGW_ANTISPAM_*`) stays in force. A message is scanned, scored and learned from
with the setup in force when it arrived, even if a new version comes meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import redis.asyncio as aioredis

from mailgw_libs.bayes import ClassifierConfig
from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.events import SymbolHit
from mailgw_libs.failfast import Breaker

from .bayes import AutolearnPolicy, BayesService
from .settings import AntispamSettings


@dataclass(frozen=True)
class ScanSetup:
    spam_threshold: float
    symbol_scores: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    bayes: BayesService | None = None      # None: Bayes off
    autolearn: AutolearnPolicy = field(default_factory=AutolearnPolicy)

    def rescore(self, hits: list[SymbolHit]) -> list[SymbolHit]:
        """The hits with the configured scores; a symbol scored 0 is dropped (as a rule scored 0 never
        reports), so that an administrator can switch a symbol off."""
        if not self.symbol_scores:
            return hits
        out = []
        for hit in hits:
            score = self.symbol_scores.get(hit.name)
            if score is None:
                out.append(hit)
            elif score != 0:
                out.append(hit.model_copy(update={"score": score}))
        return out


def make_setup(settings: AntispamSettings, config: GatewayConfig | None, client: aioredis.Redis,
               breaker: Breaker) -> ScanSetup:
    """The setup of a configuration version (None: none published yet, the environment's settings).

    `client` and `breaker` are the process's Bayes store connection and its fail-fast state: they outlive
    configuration versions (a new version must not reconnect, nor forget that the store is down)."""
    scoring = config.scoring if config is not None else None
    threshold = scoring.spam_threshold if scoring is not None and is_set(scoring, "spam_threshold") \
        else settings.spam_threshold
    scores: Mapping[str, float] = MappingProxyType(dict(scoring.symbol_scores)) \
        if scoring is not None and is_set(scoring, "symbol_scores") else MappingProxyType({})
    if scoring is not None and is_set(scoring, "bayes"):
        given = scoring.bayes
        enabled, min_learns, autolearn = given.enabled, given.min_learns, given.autolearn
        ham_below, spam_from = given.autolearn_ham_below, given.autolearn_spam_from
        min_spam = min_ham = min_learns
    else:
        enabled, autolearn = settings.bayes, settings.bayes_autolearn
        ham_below, spam_from = settings.autolearn_ham, settings.autolearn_spam
        min_spam, min_ham = settings.bayes_min_spam, settings.bayes_min_ham
    bayes = BayesService(client, settings.bayes_site, settings.bayes_per_user,
                         ClassifierConfig(min_spam=min_spam, min_ham=min_ham), breaker,
                         settings.bayes_cache_s) if enabled else None
    # Never learn as spam what the gateway itself would not call spam: with a threshold raised above the
    # autolearn level, the autolearn level follows it.
    policy = AutolearnPolicy(enabled=autolearn, spam_threshold=max(spam_from, threshold), ham_threshold=ham_below)
    return ScanSetup(threshold, scores, bayes, policy)
