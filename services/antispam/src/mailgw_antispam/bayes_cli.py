"""`mailgw learn` and `mailgw bayes stats|reset|expire`: train and look after the Bayes database; Bayes in
`mailgw scan --redis`. Registered by `cli.register` (entry point group `mailgw.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from tqdm import tqdm

from mailgw_libs.bayes import BayesFilter, Label, RedisStore, TokenizerConfig, database_name, symbol
from mailgw_libs.events import SymbolHit

from .bayes import analyse_for_learning, classifier_config
from .rules import load_engine
from .settings import AntispamSettings


def _store(args: argparse.Namespace) -> tuple[aioredis.Redis, RedisStore]:
    settings = AntispamSettings()
    client = aioredis.Redis.from_url(args.redis or settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    return client, RedisStore(client, database_name(args.site or settings.bayes_site, args.user or ""))


async def _learn(args: argparse.Namespace) -> Counter[str]:
    from .cli import messages  # cli imports this module to register the commands

    client, store = _store(args)
    config = TokenizerConfig()
    settings = AntispamSettings()
    # the rules run too: their names are tokens, learned as the scan classifies them
    engine = load_engine(tuple(settings.rule_dirs), settings.default_rules, settings.hyperscan,
                         tuple(settings.ok_languages), settings.hyperscan_cache_dir)
    outcomes: Counter[str] = Counter()
    jobs: list[tuple[Label, str]] = [("ham", p) for p in args.ham or ()] + [("spam", p) for p in args.spam or ()]
    try:
        with tqdm(unit=" msg", desc="learning", disable=args.quiet, file=sys.stderr) as progress:
            for label, path in jobs:
                for name, raw in messages([Path(path)]):
                    try:
                        tokens, key = analyse_for_learning(raw, config, engine, settings.max_scan_chars)
                    except Exception as exc:  # noqa: BLE001 - one unreadable message must not stop a training run
                        print(f"mailgw learn: {name}: {exc!r}", file=sys.stderr)
                        outcomes["unreadable"] += 1
                        progress.update(1)
                        continue
                    outcome = await (store.forget(key, tokens) if args.forget else store.learn(key, tokens, label))
                    outcomes[f"{label} {outcome}"] += 1
                    progress.update(1)
    except (redis.exceptions.RedisError, OSError) as exc:
        raise SystemExit(f"mailgw learn: Bayes store: {exc}") from exc
    finally:
        await client.aclose()
    return outcomes


def cmd_learn(args: argparse.Namespace) -> None:
    if not args.ham and not args.spam:
        raise SystemExit("mailgw learn: give --ham PATH and/or --spam PATH")
    outcomes = asyncio.run(_learn(args))
    for key, count in sorted(outcomes.items()):
        print(f"{count:7d}  {key}")
    print(f"{sum(outcomes.values()):7d}  messages", file=sys.stderr)


async def _bayes(args: argparse.Namespace) -> str:
    client, store = _store(args)
    try:
        if args.action == "stats":
            stats = await store.stats()
            return (f"database {store.prefix}\nspam messages {stats.spam_messages}\nham messages "
                    f"{stats.ham_messages}\ntokens {stats.tokens}\nlearned message ids {stats.learned_messages}")
        if args.action == "reset":
            if not args.yes:
                raise SystemExit("mailgw bayes reset: this deletes the whole database; add --yes")
            await store.reset()
            return f"database {store.prefix} deleted"
        removed = await store.expire(args.days, args.max_count)
        return f"{removed} tokens expired (seen in <= {args.max_count} messages, not learned for {args.days} days)"
    except (redis.exceptions.RedisError, OSError) as exc:
        raise SystemExit(f"mailgw bayes: Bayes store: {exc}") from exc
    finally:
        await client.aclose()


def cmd_bayes(args: argparse.Namespace) -> None:
    print(asyncio.run(_bayes(args)))


class ScanBayes:
    """Bayes for `mailgw scan --redis URL` (a synchronous loop of its own: scan is a plain command)."""

    def __init__(self, url: str, site: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.filter = BayesFilter(RedisStore(self.client, database_name(site)), classifier_config(AntispamSettings()))
        self.config = TokenizerConfig()

    def hits(self, tokens: frozenset[str]) -> list[SymbolHit]:
        """The BAYES_xx symbol for the tokens of a scanned message (`bayes.analyse`)."""
        try:
            outcome = self.loop.run_until_complete(self.filter.classify(tokens))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise SystemExit(f"mailgw scan: Bayes store: {exc}") from exc
        return [] if outcome is None else [symbol(outcome)]

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL", help="Redis of the Bayes database (default MAILGW_REDIS_URL)")
    parser.add_argument("--site", help="site database name (default MAILGW_ANTISPAM_BAYES_SITE)")
    parser.add_argument("--user", help="the per-user database of this recipient address")


def register(sub: Any) -> None:
    learn = sub.add_parser("learn", help="train Bayes on ham and spam (.eml files, directories, Maildir, mbox)")
    learn.add_argument("--ham", action="append", metavar="PATH", help="ham: file, directory or mbox (repeatable)")
    learn.add_argument("--spam", action="append", metavar="PATH", help="spam: file, directory or mbox (repeatable)")
    learn.add_argument("--forget", action="store_true", help="unlearn these messages instead")
    learn.add_argument("--quiet", action="store_true", help="no progress bar")
    _database_options(learn)
    learn.set_defaults(func=cmd_learn)

    bayes = sub.add_parser("bayes", help="the Bayes database: stats, reset, expire")
    bayes.add_argument("action", choices=["stats", "reset", "expire"])
    bayes.add_argument("--yes", action="store_true", help="confirm reset")
    bayes.add_argument("--days", type=int, default=90, help="expire: not learned for this many days")
    bayes.add_argument("--max-count", type=int, default=1, help="expire: seen in at most this many messages")
    _database_options(bayes)
    bayes.set_defaults(func=cmd_bayes)
