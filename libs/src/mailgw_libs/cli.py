"""`mailgw`: the administrator's command line (reads the reporting API; grows with later issues)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys

import httpx

DEFAULT_API = os.environ.get("MAILGW_API", "http://127.0.0.1:8025")


def _auth() -> httpx.BasicAuth | None:
    """HTTP Basic credentials of an administrator (configuration `admins`) from the environment, if given."""
    user, password = os.environ.get("MAILGW_API_USER", ""), os.environ.get("MAILGW_API_PASSWORD", "")
    return httpx.BasicAuth(user, password) if user and password else None


def _get(api: str, path: str, params: dict[str, str]) -> object:
    try:
        response = httpx.get(api.rstrip("/") + path, params={k: v for k, v in params.items() if v}, timeout=10,
                             auth=_auth())
    except httpx.HTTPError as exc:
        raise SystemExit(f"mailgw: cannot reach the reporting API at {api}: {exc}") from exc
    if response.status_code >= 400:
        raise SystemExit(f"mailgw: {response.status_code}: {response.text[:500]}")
    return response.json()


def _call(api: str, method: str, path: str, params: dict[str, str] | None = None,
          body: object | None = None) -> dict[str, object]:
    """A request to the reporting API that changes something (POST, DELETE); the JSON answer."""
    try:
        response = httpx.request(method, api.rstrip("/") + path, params={k: v for k, v in (params or {}).items() if v},
                                 json=body, timeout=30, auth=_auth())
    except httpx.HTTPError as exc:
        raise SystemExit(f"mailgw: cannot reach the reporting API at {api}: {exc}") from exc
    if response.status_code >= 400:
        raise SystemExit(f"mailgw: {response.status_code}: {response.text[:500]}")
    answer = response.json()
    return answer if isinstance(answer, dict) else {"answer": answer}


def cmd_stats(args: argparse.Namespace) -> None:
    summary = _get(args.api, "/api/v1/stats/summary", {"since": args.since or "", "until": args.until or ""})
    if args.json:
        print(json.dumps(summary))
        return
    assert isinstance(summary, dict)
    for key, value in summary.items():
        if not isinstance(value, dict):
            print(f"{key:>12}  {value}")


def cmd_tracking(args: argparse.Namespace) -> None:
    data = _get(args.api, "/api/v1/tracking", {"sender": args.sender or "", "recipient": args.recipient or "",
                                               "since": args.since or "", "limit": str(args.limit)})
    rows = data.get("rows", []) if isinstance(data, dict) else data
    assert isinstance(rows, list)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            symbols = ",".join(s["name"] for s in row.get("symbols", [])[:5])
            print(f"{row.get('received_at', '')[:19]}  {row.get('message_id', ''):26}  {row.get('status', ''):11} "
                  f"{row.get('sender', '')} -> {row.get('recipient', '')}  score={row.get('score', '')}  {symbols}")


def load_plugins(sub: argparse._SubParsersAction) -> None:
    """Subcommands of installed packages: each `mailgw.cli` entry point is `register(subparsers)`."""
    for entry in importlib.metadata.entry_points(group="mailgw.cli"):
        try:
            register = entry.load()
            register(sub)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the other commands
            print(f"mailgw: cannot load subcommands of {entry.name}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mailgw", description="Mail security gateway administration")
    parser.add_argument("--api", default=DEFAULT_API, help="reporting API base URL (env MAILGW_API)")
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="message counts by fate")
    stats.add_argument("--since")
    stats.add_argument("--until")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)
    track = sub.add_parser("tracking", help="where did a message go, and why")
    track.add_argument("--sender")
    track.add_argument("--recipient")
    track.add_argument("--since")
    track.add_argument("--limit", type=int, default=50)
    track.add_argument("--json", action="store_true")
    track.set_defaults(func=cmd_tracking)
    from . import quarantine_cli  # imports this module's API helpers

    quarantine_cli.register(sub)
    load_plugins(sub)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
