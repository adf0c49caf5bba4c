"""`mailgw config ...`: validate, apply (diff first), export, history and rollback of the gateway configuration.

Talks to Kafka directly (`--bootstrap`, env MAILGW_KAFKA_BOOTSTRAP): the topic is the source of truth and
every service follows it, so there is no API in between that could disagree with it.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import getpass
import json
import logging
import os
import socket
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from ..settings import ServiceSettings
from .document import ConfigError, content_hash, load_file, to_yaml
from .model import GatewayConfig, shipped_defaults
from .store import ConfigStore
from .versions import Accepted, VersionLog

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> ServiceSettings:
    settings = ServiceSettings()
    return settings.model_copy(update={"kafka_bootstrap": args.bootstrap}) if args.bootstrap else settings


def _run(coro: Coroutine[Any, Any, T], bootstrap: str) -> T:
    # aiokafka logs every failed connection attempt; the one error below says it once, readably.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        raise SystemExit(f"mailgw config: {exc}") from None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise SystemExit(f"mailgw config: cannot use Kafka at {bootstrap}: {exc!r}") from None


def _load(path: str) -> GatewayConfig:
    try:
        return load_file(path)
    except ConfigError as exc:
        raise SystemExit(f"mailgw config: {path} is not valid, nothing published:\n{exc}") from None


def _author(args: argparse.Namespace) -> str:
    if args.author:
        return str(args.author)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _current(versions: VersionLog) -> tuple[GatewayConfig, str]:
    if versions.current_config is None:
        return shipped_defaults(), "shipped defaults"
    return versions.current_config, f"version {versions.version}"


def _diff(old: GatewayConfig, old_label: str, new: GatewayConfig, new_label: str) -> str:
    return "".join(difflib.unified_diff(to_yaml(old).splitlines(keepends=True), to_yaml(new).splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label))


def _confirm(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise SystemExit("mailgw config: not a terminal: pass --yes to publish without asking")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _publish(args: argparse.Namespace, config: GatewayConfig, label: str, rollback_of: int | None = None) -> None:
    """Diff against the current version, ask, publish as the next version (refused if another came first)."""
    settings = _settings(args)
    store = ConfigStore(settings)
    versions = _run(store.read(), settings.kafka_bootstrap)
    current, current_label = _current(versions)
    diff = _diff(current, current_label, config, label)
    if not diff:
        print(f"no change against {current_label}: nothing published")
        return
    sys.stdout.write(diff)
    if not _confirm(args, f"Publish as version {versions.sequence + 1}?"):
        print("nothing published")
        return
    expected = versions.sequence
    if args.force:
        # --force: publish on top of whatever is current now, even if it changed since the diff above.
        expected = _run(store.read(), settings.kafka_bootstrap).sequence
    comment = args.comment or (f"rollback to version {rollback_of}" if rollback_of else "")
    accepted: Accepted = _run(store.publish(config, expected, _author(args), comment, rollback_of),
                              settings.kafka_bootstrap)
    print(f"published version {accepted.record.version} (sha256 {accepted.record.sha256[:16]})")


def _version_config(versions: VersionLog, version: int) -> GatewayConfig:
    target = versions.find(version)
    if target is None:
        known = f"{versions.history[0].record.version}..{versions.sequence}" if versions.history else "none"
        raise SystemExit(f"mailgw config: no version {version} (versions: {known})")
    if target.config is None:
        raise SystemExit(f"mailgw config: version {version} is not valid for this mailgw:\n{target.error}")
    return target.config


def cmd_validate(args: argparse.Namespace) -> None:
    config = _load(args.file)
    print(f"{args.file}: valid (sha256 {content_hash(config)[:16]})")


def cmd_apply(args: argparse.Namespace) -> None:
    _publish(args, _load(args.file), args.file)


def cmd_rollback(args: argparse.Namespace) -> None:
    settings = _settings(args)
    versions = _run(ConfigStore(settings).read(), settings.kafka_bootstrap)
    _publish(args, _version_config(versions, args.version), f"version {args.version}", rollback_of=args.version)


def cmd_export(args: argparse.Namespace) -> None:
    settings = _settings(args)
    versions = _run(ConfigStore(settings).read(), settings.kafka_bootstrap)
    if args.version is not None:
        target = versions.find(args.version)
        config = _version_config(versions, args.version)
        assert target is not None
        label = f"version {args.version} ({target.record.created_at.isoformat()}, {target.record.author})"
    else:
        config, label = _current(versions)
    sys.stdout.write(f"# mailgw configuration: {label}\n{to_yaml(config)}")


def cmd_history(args: argparse.Namespace) -> None:
    settings = _settings(args)
    versions = _run(ConfigStore(settings).read(), settings.kafka_bootstrap)
    for accepted in versions.history:
        record = accepted.record
        if args.json:
            print(json.dumps({**record.summary(), "offset": accepted.offset, "valid": accepted.config is not None,
                              "error": accepted.error}))
        else:
            note = f" (rollback to {record.rollback_of})" if record.rollback_of else ""
            note += " NOT VALID: " + accepted.error.splitlines()[0] if accepted.error else ""
            print(f"{record.version:5d}  {record.created_at.isoformat(timespec='seconds')}  {record.sha256[:12]}  "
                  f"{record.author}  {record.comment}{note}")
    if not versions.history and not args.json:
        print("no version published: the shipped defaults are in force")
    for offset, key, reason in versions.ignored:
        print(f"ignored record at offset {offset} ({key}): {reason.splitlines()[0]}", file=sys.stderr)


def cmd_prune(args: argparse.Namespace) -> None:
    if args.keep < 1:
        raise SystemExit("mailgw config: --keep must be at least 1")
    settings = _settings(args)
    store = ConfigStore(settings)
    pruned, _keys = _run(store.read(), settings.kafka_bootstrap).prunable(args.keep)
    if not pruned:
        print("nothing to prune")
        return
    numbers = [a.record.version for a in pruned]
    if not _confirm(args, f"Delete versions {numbers[0]}..{numbers[-1]} ({len(numbers)}) from the history?"):
        print("nothing pruned")
        return
    done = _run(store.prune(args.keep), settings.kafka_bootstrap)
    print(f"pruned {len(done)} versions (removed from the topic when the broker compacts it)")


def register(sub: Any) -> None:
    """Adds `config` to the `mailgw` subcommands (argparse subparsers)."""
    # The fold logs every ignored record; the CLI reports them itself (history) instead.
    logging.getLogger("mailgw.config").setLevel(logging.CRITICAL)
    parser = sub.add_parser("config", help="gateway configuration: validate, apply, export, history, rollback, prune")
    csub = parser.add_subparsers(dest="config_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", default=os.environ.get("MAILGW_KAFKA_BOOTSTRAP"),
                        help="Kafka bootstrap servers (env MAILGW_KAFKA_BOOTSTRAP, default 127.0.0.1:9092)")
    publishing = argparse.ArgumentParser(add_help=False)
    publishing.add_argument("--yes", "-y", action="store_true", help="publish without asking")
    publishing.add_argument("--comment", "-m", default="", help="why (shown in history)")
    publishing.add_argument("--author", help="default user@host")
    publishing.add_argument("--force", action="store_true",
                            help="publish even if the current version changed since the diff was shown")

    validate = csub.add_parser("validate", help="check a YAML file, publish nothing")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)
    apply = csub.add_parser("apply", parents=[common, publishing], help="validate, show the diff, publish")
    apply.add_argument("file")
    apply.set_defaults(func=cmd_apply)
    export = csub.add_parser("export", parents=[common], help="the current (or an older) version as YAML")
    export.add_argument("--version", type=int)
    export.set_defaults(func=cmd_export)
    history = csub.add_parser("history", parents=[common], help="every version: number, time, hash, author, comment")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)
    rollback = csub.add_parser("rollback", parents=[common, publishing],
                               help="publish the content of an older version as a new version")
    rollback.add_argument("version", type=int)
    rollback.set_defaults(func=cmd_rollback)
    prune = csub.add_parser("prune", parents=[common], help="delete old versions from the history (tombstones)")
    prune.add_argument("--keep", type=int, required=True, help="keep this many newest versions (at least 1)")
    prune.add_argument("--yes", "-y", action="store_true", help="prune without asking")
    prune.set_defaults(func=cmd_prune)
