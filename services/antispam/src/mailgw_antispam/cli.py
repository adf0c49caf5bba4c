"""`mailgw scan`: the antispam checks on message files, outside the pipeline, with the service's code.

Registered on the `mailgw` command line through the `mailgw.cli` entry point (see pyproject.toml).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mailbox
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailgw_libs.bayes import TokenizerConfig

from .bayes import analyse
from .bayes_cli import ScanBayes
from .bayes_cli import register as register_bayes
from .online import OnlineChecks
from .rules import load_engine
from .scanner import scan
from .settings import AntispamSettings


def _is_mbox(path: Path) -> bool:
    if path.suffix.lower() == ".eml":
        return False
    with path.open("rb") as fh:
        head = fh.read(5)
        if head != b"From ":
            return False
        data = fh.read(64 * 1024 * 1024)
    return b"\nFrom " in data


def messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(label, raw) for .eml files, directories (recursively, Maildir included) and mbox files."""
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                yield from messages([child])
        elif path.is_file():
            if _is_mbox(path):
                for index, message in enumerate(mailbox.mbox(path, create=False)):
                    yield f"{path}#{index + 1}", message.as_bytes()
            else:
                yield str(path), path.read_bytes()
        else:
            print(f"mailgw scan: no such file or directory: {path}", file=sys.stderr)


def cmd_scan(args: argparse.Namespace) -> None:
    settings = AntispamSettings()
    rule_dirs = tuple(settings.rule_dirs) + tuple(args.rules or ())
    engine = load_engine(rule_dirs, not args.no_default_rules, settings.hyperscan and not args.no_hyperscan,
                         tuple(settings.ok_languages), settings.hyperscan_cache_dir)
    for problem in engine.ruleset.problems:
        print(f"mailgw scan: rule file: {problem}", file=sys.stderr)
    threshold = settings.spam_threshold if args.threshold is None else args.threshold
    count = spam = 0
    bayes = ScanBayes(args.redis, settings.bayes_site) if args.redis else None
    # DNS checks (authentication, DNS lists) only with --network: a scan is offline by default
    online = OnlineChecks.from_settings(settings, None, network=True, auth=True) if args.network else None
    loop = asyncio.new_event_loop() if online is not None else None
    for label, raw in messages([Path(p) for p in args.paths]):
        if bayes is not None:  # one parse for the rules and the Bayes tokens (rule names among them)
            analysis = analyse(raw, settings.max_scan_chars, engine, TokenizerConfig())
            hits = list(analysis.hits) + bayes.hits(analysis.tokens)
        else:
            hits = scan(raw, settings.max_scan_chars, engine)
        if online is not None and loop is not None:
            hits += loop.run_until_complete(online.run(raw))[0]
        score = round(sum(h.score for h in hits), 3)
        is_spam = score >= threshold
        count += 1
        spam += is_spam
        if args.json:
            record: dict[str, Any] = {"path": label, "score": score, "threshold": threshold, "spam": is_spam,
                                      "symbols": [{"name": h.name, "score": h.score, "detail": h.detail}
                                                  for h in hits]}
            print(json.dumps(record), flush=True)
        else:
            names = ", ".join(f"{h.name}({h.score:g})" for h in sorted(hits, key=lambda h: -h.score))
            print(f"{'SPAM' if is_spam else 'ham '} {score:7.2f}  {label}  {names}", flush=True)
    if bayes is not None:
        bayes.close()
    if loop is not None:
        loop.close()
    if not args.json:
        print(f"{count} messages, {spam} spam at threshold {threshold:g}", file=sys.stderr)


def register(sub: Any) -> None:
    """Adds `scan` to the `mailgw` subcommands (argparse subparsers)."""
    parser = sub.add_parser("scan", help="run the antispam checks on .eml files, directories or mbox files")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("--rules", action="append", metavar="DIR",
                        help="extra SpamAssassin-style rule directory or .cf file (repeatable)")
    parser.add_argument("--no-default-rules", action="store_true", help="do not load the project's own rules")
    parser.add_argument("--no-hyperscan", action="store_true", help="match with Python re only")
    parser.add_argument("--threshold", type=float, default=None, help="spam threshold (default 5)")
    parser.add_argument("--redis", metavar="URL", help="score with Bayes from this Redis (the site database)")
    parser.add_argument("--network", action="store_true",
                        help="also run the DNS checks: DKIM/DMARC/ARC, DNSBL/DNSWL/URIBL (MAILGW_DNS_* resolver)")
    parser.set_defaults(func=cmd_scan)
    register_bayes(sub)
