"""antispam follows mailgw.config: scoring.spam_threshold, scoring.symbol_scores, scoring.bayes.

Unit tests of the precedence (environment until a version gives the field) and of rescoring, then the running
service on real Kafka and Redis picking up a published version live."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from mailgw_antispam.app import build
from mailgw_antispam.checks import GTUBE
from mailgw_antispam.configured import make_setup
from mailgw_antispam.settings import AntispamSettings
from mailgw_devstack.infra import free_port
from mailgw_libs import topics
from mailgw_libs.bayes import RedisStore, database_name
from mailgw_libs.config.model import Bayes, GatewayConfig, Scoring
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.events import SymbolHit, Verdict
from mailgw_libs.failfast import Breaker

HITS = [SymbolHit(name="A", score=1.0), SymbolHit(name="B", score=2.0), SymbolHit(name="C", score=3.0)]


def _setup(settings: AntispamSettings, config: GatewayConfig | None) -> Any:
    return make_setup(settings, config, aioredis.Redis(), Breaker())


def test_environment_applies_until_a_version_gives_the_field() -> None:
    settings = AntispamSettings(spam_threshold=6.5, bayes=True, bayes_min_spam=7, bayes_min_ham=9,
                                autolearn_spam=20.0, autolearn_ham=-1.0)
    shipped = _setup(settings, None)
    assert shipped.spam_threshold == 6.5 and not shipped.symbol_scores
    assert shipped.bayes is not None and (shipped.bayes.config.min_spam, shipped.bayes.config.min_ham) == (7, 9)
    assert (shipped.autolearn.spam_threshold, shipped.autolearn.ham_threshold) == (20.0, -1.0)
    # shipped defaults (no field given) keep the environment too
    assert _setup(settings, GatewayConfig()).spam_threshold == 6.5

    given = GatewayConfig(scoring=Scoring(spam_threshold=4.0, symbol_scores={"B": 0.5},
                                          bayes=Bayes(enabled=True, min_learns=50, autolearn=False,
                                                      autolearn_ham_below=0.5, autolearn_spam_from=10.0)))
    setup = _setup(settings, given)
    assert setup.spam_threshold == 4.0 and dict(setup.symbol_scores) == {"B": 0.5}
    assert setup.bayes is not None and (setup.bayes.config.min_spam, setup.bayes.config.min_ham) == (50, 50)
    assert not setup.autolearn.enabled and setup.autolearn.ham_threshold == 0.5
    assert _setup(settings, GatewayConfig(scoring=Scoring(bayes=Bayes(enabled=False)))).bayes is None


def test_autolearn_never_learns_spam_below_the_spam_threshold() -> None:
    config = GatewayConfig(scoring=Scoring(spam_threshold=15.0, bayes=Bayes(enabled=True, autolearn_spam_from=12.0)))
    assert _setup(AntispamSettings(), config).autolearn.spam_threshold == 15.0


def test_rescore_replaces_scores_and_drops_symbols_scored_zero() -> None:
    setup = _setup(AntispamSettings(), GatewayConfig(scoring=Scoring(symbol_scores={"A": 9.0, "C": 0.0,
                                                                                      "UNKNOWN": 4.0})))
    assert [(h.name, h.score) for h in setup.rescore(HITS)] == [("A", 9.0), ("B", 2.0)]
    assert _setup(AntispamSettings(), None).rescore(HITS) == HITS


async def test_published_scoring_applies_live(fresh_kafka: str, kafka_bus: Any, redis_url: str, unique: str,
                                              started: Any) -> None:
    # Environment: Bayes on with a tiny minimum training; the site database knows one spam and one ham.
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, database_name(unique))
    await store.learn("s1", {"gtube", "test"}, "spam")
    await store.learn("h1", {"meeting", "agenda"}, "ham")
    await client.aclose()
    settings = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=free_port(), redis_url=redis_url,
                                bayes_site=unique, bayes_min_spam=1, bayes_min_ham=1, bayes_autolearn=False)
    message = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: test\r\n\r\n" + GTUBE + b"\r\n"
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)

        async def scan() -> dict[str, float]:
            message_id = await kafka_bus.send_mail(message)
            verdict = Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, message_id)).value)
            return {h.name: h.score for h in verdict.symbols}

        before = await scan()
        assert before["GTUBE"] == 1000.0 and any(name.startswith("BAYES_") for name in before)

        config = GatewayConfig(scoring=Scoring(symbol_scores={"GTUBE": 7.5}, bayes=Bayes(enabled=False)))
        await ConfigStore(settings).publish(config, 0, "test", "GTUBE scored 7.5, Bayes off")
        follower = runtime.config_follower
        assert follower is not None
        for _ in range(1000):  # hang guard, not a timing assertion
            if follower.version == 1:
                break
            await asyncio.sleep(0.01)
        assert follower.version == 1

        after = await scan()
        assert after["GTUBE"] == 7.5 and not any(name.startswith("BAYES_") for name in after)
