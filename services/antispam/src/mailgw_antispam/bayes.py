"""Bayes in antispam: the message's tokens beside the rule hits, the BAYES_xx symbol, autolearn, learning.

The CPU part (`analyse`: one parse, rules and tokens) runs in an executor; the store calls are async.
A store that is down never delays a verdict: the lookup fails fast, the verdict goes out without a Bayes
symbol, and the breaker skips the store for a pause. Learning from `mail.learn` does the opposite: a store
failure is transient, so the event is redelivered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions

from mailgw_libs import bus
from mailgw_libs.bayes import (
    BayesFilter,
    CachedStore,
    ClassifierConfig,
    DecodedPart,
    Label,
    LearnOutcome,
    Outcome,
    RedisStore,
    TokenizerConfig,
    TokenStore,
    database_name,
    message_key,
    tokenize_decoded,
)
from mailgw_libs.events import SymbolHit
from mailgw_libs.failfast import Breaker

from . import checks
from .rules import Engine, MessageView
from .scanner import scan_view
from .settings import AntispamSettings

log = logging.getLogger(__name__)

HEADER_KINDS = frozenset({"header", "mimeheader"})
BODY_KINDS = frozenset({"body", "rawbody", "uri", "full"})
_STORE_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class Analysis:
    hits: list[SymbolHit]
    tokens: frozenset[str]
    key: str  # identity of the message for learning


def analyse(raw: bytes, max_chars: int, engine: Engine | None, tokenizer: TokenizerConfig) -> Analysis:
    """Rule hits and Bayes tokens of a message from one parse. CPU-bound: run it in an executor."""
    msg, hits = checks.parse_or_flag(raw)  # a message too deep to parse: its headers and a flag
    scanned, view = scan_view(raw, msg, max_chars, engine)
    hits += scanned
    tokens = tokenize_decoded(msg, [n.content_type for n in view.nodes if not n.multipart],
                              decoded_parts(view), tokenizer)
    tokens.update(rule_tokens(hits))
    return Analysis(hits=hits, tokens=frozenset(tokens), key=message_key(msg, raw))


def decoded_parts(view: MessageView) -> list[DecodedPart]:
    """The text parts as the rules decoded them (HTML source and visible text) for the Bayes tokenizer."""
    visible: list[str] = view.memo.get("part_plain", [])
    return [DecodedPart(part.content_type, part.text, visible[i] if i < len(visible) else None)
            for i, part in enumerate(view.text_parts)]


def rule_tokens(hits: list[SymbolHit]) -> set[str]:
    """The names of the rules that hit, as Bayes tokens: Bayes learns which (weak) rules go with spam and ham
    at this site, so that rules scored low for safety still count where the site's mail shows they should."""
    return {"R:" + h.name for h in hits if not h.name.startswith("BAYES_")}


def analyse_for_learning(raw: bytes, tokenizer: TokenizerConfig, engine: Engine,
                         max_chars: int = 1_000_000) -> tuple[frozenset[str], str]:
    """Tokens and key to learn a message by: the same tokens a scan classifies (rule names included)."""
    analysis = analyse(raw, max_chars, engine, tokenizer)
    return analysis.tokens, analysis.key


@dataclass(frozen=True)
class AutolearnPolicy:
    enabled: bool = True
    spam_threshold: float = 12.0     # learn spam at or above (points without Bayes)
    ham_threshold: float = 0.1       # learn ham at or below
    min_header_points: float = 3.0   # spam: header rules must have contributed this much ...
    min_body_points: float = 3.0     # ... and body rules this much (one kind alone is not proof)
    ham_veto_probability: float = 0.5  # no ham autolearn when a trained Bayes says at least this


def autolearn_label(hits: list[SymbolHit], kinds: Mapping[str, str], policy: AutolearnPolicy,
                    excluded: frozenset[str] = frozenset(), bayes_probability: float | None = None) -> Label | None:
    """What autolearn would learn the message as, or None.

    Bayes' own symbol never counts (it would learn what it already believes, and run away), nor do rules
    flagged `noautolearn`. `kinds` maps rule names to their rule type (header, body, ...). A trained Bayes
    may veto learning ham: a low rule score alone is weak evidence, and learning a spam the rules missed as
    ham would teach Bayes to miss the next one too."""
    if not policy.enabled:
        return None
    counted = [h for h in hits if not h.name.startswith("BAYES_") and h.name not in excluded]
    total = sum(h.score for h in counted)
    if total <= policy.ham_threshold:
        if bayes_probability is not None and bayes_probability >= policy.ham_veto_probability:
            return None
        return "ham"
    if total < policy.spam_threshold:
        return None
    header = sum(h.score for h in counted if kinds.get(h.name) in HEADER_KINDS)
    body = sum(h.score for h in counted if kinds.get(h.name) in BODY_KINDS)
    if header >= policy.min_header_points and body >= policy.min_body_points:
        return "spam"
    return None


def rule_kinds(engine: Engine) -> tuple[dict[str, str], frozenset[str]]:
    """(rule name -> kind, names flagged noautolearn) of an engine's rule set."""
    ruleset = engine.ruleset
    kinds = {name: rule.kind for name, rule in ruleset.rules.items()}
    excluded = frozenset(name for name, flags in ruleset.tflags.items() if "noautolearn" in flags)
    return kinds, excluded


@dataclass
class BayesService:
    """The site database (and per-user databases when enabled) of one antispam process."""

    client: aioredis.Redis
    site: str = "default"
    per_user: bool = False
    config: ClassifierConfig = field(default_factory=ClassifierConfig)
    breaker: Breaker = field(default_factory=Breaker)
    # Seconds a token count read from Redis is reused by this process for the site database (0: never).
    cache_s: float = 30.0
    _site_store: TokenStore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        site = RedisStore(self.client, database_name(self.site))
        self._site_store = CachedStore(site, self.cache_s) if self.cache_s > 0 else site

    def filter_for(self, user: str = "") -> BayesFilter:
        return BayesFilter(self.store_for(user), self.config)

    def store_for(self, user: str = "") -> TokenStore:
        if not (self.per_user and user):
            return self._site_store
        return RedisStore(self.client, database_name(self.site, user))

    async def classify(self, tokens: frozenset[str], recipients: list[str]) -> Outcome | None:
        """Bayes' outcome for the message; None while untrained or while the store is unreachable (fail open)."""
        if self.breaker.is_open():
            return None
        try:
            if self.per_user and len(recipients) == 1:
                outcome = await self.filter_for(recipients[0]).classify(tokens)
                if outcome is not None:
                    return outcome
            return await self.filter_for().classify(tokens)
        except _STORE_ERRORS as exc:
            self.breaker.trip()
            log.warning("bayes store unavailable, scanning without Bayes: %r", exc)
            return None

    async def learn(self, tokens: frozenset[str], key: str, label: Label, recipient: str = "",
                    forget: bool = False) -> LearnOutcome:
        """Learn (or forget) into the site database and, per user, the recipient's. Store failures raise
        `bus.TransientError` so that the event is redelivered."""
        filters = [self.filter_for()]
        if self.per_user and recipient:
            filters.append(self.filter_for(recipient))
        try:
            outcomes = [await (f.forget(key, tokens) if forget else f.learn(key, tokens, label)) for f in filters]
        except _STORE_ERRORS as exc:
            raise bus.TransientError(f"bayes store: {exc!r}") from exc
        return outcomes[0]

    async def autolearn(self, tokens: frozenset[str], key: str, label: Label, recipients: list[str]) -> None:
        """Autolearn after the verdict went out: a failure loses one lesson, never the verdict."""
        if self.breaker.is_open():
            return
        try:
            await self.learn(tokens, key, label, recipients[0] if len(recipients) == 1 else "")
        except bus.TransientError as exc:
            self.breaker.trip()
            log.warning("autolearn skipped: %s", exc)


def classifier_config(settings: AntispamSettings) -> ClassifierConfig:
    return ClassifierConfig(min_spam=settings.bayes_min_spam, min_ham=settings.bayes_min_ham)
