"""Our filter on the folds: cross-validation (rules + Bayes trained on 4 folds) and throughput (1 and N processes,
Bayes in a real redis-server)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from folds import Sample, Tally

from mailgw_antispam.bayes import Analysis, analyse, classifier_config
from mailgw_antispam.rules import load_engine
from mailgw_antispam.settings import AntispamSettings
from mailgw_libs.bayes import (
    BANDS,
    CachedStore,
    MemoryStore,
    RedisStore,
    TokenizerConfig,
    TokenStore,
    combine,
    is_trained,
    symbol,
)
from mailgw_libs.bayes.classifier import Outcome


def analyse_all(samples: list[Sample]) -> list[Analysis]:
    settings = AntispamSettings()
    engine = load_engine(tuple(settings.rule_dirs), settings.default_rules, settings.hyperscan)
    return [analyse(s.raw, settings.max_scan_chars, engine, TokenizerConfig()) for s in samples]


@dataclass
class CvResult:
    tally: Tally
    rules_only: Tally
    probabilities: list[float]
    rule_scores: list[float]


def cross_validate(samples: list[Sample], analyses: list[Analysis], k: int = 5, threshold: float = 5.0,
                   bands: tuple[tuple[float, str, float], ...] = BANDS) -> CvResult:
    config = classifier_config(AntispamSettings())
    tally, rules_only = Tally(), Tally()
    probabilities = [0.5] * len(samples)
    rule_scores = [sum(h.score for h in a.hits) for a in analyses]
    for fold in range(k):
        store = MemoryStore()
        for sample, analysis in zip(samples, analyses, strict=True):
            if sample.fold != fold:
                store.learn_now(analysis.key, analysis.tokens, sample.label)  # type: ignore[arg-type]
        for index, (sample, analysis) in enumerate(zip(samples, analyses, strict=True)):
            if sample.fold != fold:
                continue
            totals, counts = store.lookup_now(analysis.tokens)
            outcome = combine(counts, totals, config) if is_trained(totals, config) else Outcome(0.5, 0)
            probabilities[index] = outcome.probability
            bayes_score = symbol(outcome, bands).score if is_trained(totals, config) else 0.0
            tally.add(sample.label, rule_scores[index] + bayes_score >= threshold)
            rules_only.add(sample.label, rule_scores[index] >= threshold)
    return CvResult(tally, rules_only, probabilities, rule_scores)


def band_table(samples: list[Sample], result: CvResult) -> str:
    """How many ham and spam fall in each Bayes band, and their rule points: what the band scores are tuned on."""
    rows = []
    for low, name, score in BANDS:
        upper = next((b[0] for b in BANDS if b[0] > low), 1.01)
        members = [i for i, p in enumerate(result.probabilities) if low <= p < upper]
        ham = [i for i in members if samples[i].label == "ham"]
        spam = [i for i in members if samples[i].label == "spam"]
        max_ham_rules = max((result.rule_scores[i] for i in ham), default=0.0)
        rows.append(f"    {name:10} score {score:5.2f}: ham {len(ham):5}  spam {len(spam):4}  "
                    f"max ham rule points {max_ham_rules:5.2f}")
    return "\n".join(rows)


def missed(samples: list[Sample], result: CvResult, bands: tuple[tuple[float, str, float], ...] = BANDS,
           threshold: float = 5.0) -> list[str]:
    out = []
    for i, sample in enumerate(samples):
        score = result.rule_scores[i] + symbol(Outcome(result.probabilities[i], 1), bands).score
        if (sample.label == "spam") != (score >= threshold):
            out.append(f"    {sample.label} {sample.path.name} rules {result.rule_scores[i]:.2f} "
                       f"bayes p={result.probabilities[i]:.4f} total {score:.2f}")
    return out


# --- throughput --------------------------------------------------------------------------------------------

async def _train(url: str, database: str, samples: list[Sample], analyses: list[Analysis]) -> None:
    client = aioredis.Redis.from_url(url)
    store = RedisStore(client, database)
    await store.reset()
    for sample, analysis in zip(samples, analyses, strict=True):
        await store.learn(analysis.key, analysis.tokens, sample.label)  # type: ignore[arg-type]
    await client.aclose()


def train_redis(url: str, database: str, samples: list[Sample], analyses: list[Analysis]) -> None:
    asyncio.run(_train(url, database, samples, analyses))


def _worker(url: str, database: str, raws: list[bytes], barrier: object, out: object) -> None:
    settings = AntispamSettings()
    engine = load_engine(tuple(settings.rule_dirs), settings.default_rules, settings.hyperscan)
    tokenizer = TokenizerConfig()
    config = classifier_config(settings)

    async def run() -> tuple[float, Counter[str]]:
        client = aioredis.Redis.from_url(url)
        # As the service does: the site database behind the in-process token-count cache.
        store: TokenStore = RedisStore(client, database)
        if settings.bayes_cache_s > 0:
            store = CachedStore(store, settings.bayes_cache_s)
        await store.lookup({"warm"})
        names: Counter[str] = Counter()
        barrier.wait()  # type: ignore[attr-defined]
        started = time.perf_counter()
        for raw in raws:
            analysis = analyse(raw, settings.max_scan_chars, engine, tokenizer)
            totals, counts = await store.lookup(analysis.tokens)
            if is_trained(totals, config):
                names[symbol(combine(counts, totals, config)).name] += 1
        elapsed = time.perf_counter() - started
        await client.aclose()
        return elapsed, names

    elapsed, names = asyncio.run(run())
    out.put((elapsed, len(raws), sum(names.values())))  # type: ignore[attr-defined]


def throughput(url: str, database: str, raws: list[bytes], processes: int) -> tuple[float, int]:
    """Messages/s of `processes` scanning processes (rules + Bayes lookups in Redis), each on its share."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    out = context.Queue()
    workers = [context.Process(target=_worker, args=(url, database, raws[i::processes], barrier, out))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    results = [out.get() for _ in workers]
    for worker in workers:
        worker.join()
    slowest = max(r[0] for r in results)
    return sum(r[1] for r in results) / slowest, sum(r[2] for r in results)
