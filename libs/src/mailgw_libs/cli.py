"""`mailgw`: the administrator's command line (reads the reporting API; grows with later issues)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from urllib.parse import quote

import httpx

DEFAULT_API = os.environ.get("MAILGW_API", "http://127.0.0.1:8025")


def _get(api: str, path: str, params: dict[str, str]) -> object:
    try:
        response = httpx.get(api.rstrip("/") + path, params={k: v for k, v in params.items() if v}, timeout=10)
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
                                 json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise SystemExit(f"mailgw: cannot reach the reporting API at {api}: {exc}") from exc
    if response.status_code >= 400:
        raise SystemExit(f"mailgw: {response.status_code}: {response.text[:500]}")
    answer = response.json()
    return answer if isinstance(answer, dict) else {"answer": answer}


def _quarantine_path(message_id: str, suffix: str = "") -> str:
    return f"/api/v1/quarantine/{quote(message_id, safe='')}{suffix}"


def cmd_quarantine_list(args: argparse.Namespace) -> None:
    """One line per quarantined message and recipient (JSON objects with --json)."""
    data = _get(args.api, "/api/v1/quarantine", {"recipient": args.recipient or "", "sender": args.sender or "",
                                                 "kind": args.kind or "", "state": args.state or "",
                                                 "limit": str(args.limit)})
    items = data.get("items", []) if isinstance(data, dict) else []
    for item in items:
        recipients = [r for r in item.get("recipients", [])
                      if not args.recipient or r.lower() == args.recipient.lower()
                      or (args.recipient.startswith("@") and r.lower().endswith(args.recipient.lower()))]
        for recipient in recipients:
            row = {"id": item.get("id"), "kind": item.get("kind"), "sender": item.get("sender"),
                   "recipient": recipient, "subject": item.get("subject"), "score": item.get("score"),
                   "received": item.get("received_at"), "quarantined": item.get("quarantined_at"),
                   "expires": item.get("expires_at"), "state": item.get("state", "quarantined"),
                   "released": recipient in item.get("released_to", []), "size": item.get("size")}
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{str(row['received'] or '')[:19]}  {row['id']:26}  {row['kind']:7} {row['state']:11} "
                      f"score={row['score']}  {row['sender']} -> {recipient}  {row['subject']}")


def cmd_quarantine_show(args: argparse.Namespace) -> None:
    print(json.dumps(_get(args.api, _quarantine_path(args.id), {}), indent=2))


def cmd_quarantine_release(args: argparse.Namespace) -> None:
    body = {"recipients": args.recipient} if args.recipient else None
    answer = _call(args.api, "POST", _quarantine_path(args.id, "/release"), {"force": "true" if args.force else ""},
                   body)
    if args.json:
        print(json.dumps(answer))
    else:
        recipients = answer.get("recipients")
        print(f"released {args.id} to {', '.join(recipients) if isinstance(recipients, list) else recipients}")


def cmd_quarantine_delete(args: argparse.Namespace) -> None:
    answer = _call(args.api, "DELETE", _quarantine_path(args.id))
    print(json.dumps(answer) if args.json else f"deleted {args.id}")


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
    quarantine = sub.add_parser("quarantine", help="quarantined mail: list, show, release, delete")
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    qlist = qsub.add_parser("list", help="one line per quarantined message and recipient")
    qlist.add_argument("--recipient", help="user@example.com, or @example.com for a domain")
    qlist.add_argument("--sender")
    qlist.add_argument("--kind", help="spam, virus, policy, ...")
    qlist.add_argument("--state", choices=["quarantined", "released", "deleted", "any"],
                       help="default: all but deleted")
    qlist.add_argument("--limit", type=int, default=100)
    qlist.add_argument("--json", action="store_true")
    qlist.set_defaults(func=cmd_quarantine_list)
    qshow = qsub.add_parser("show", help="details of one quarantined message (JSON)")
    qshow.add_argument("id")
    qshow.set_defaults(func=cmd_quarantine_show)
    qrelease = qsub.add_parser("release", help="deliver a quarantined message to its recipients")
    qrelease.add_argument("id")
    qrelease.add_argument("--recipient", action="append", help="only this recipient (repeatable)")
    qrelease.add_argument("--force", action="store_true", help="release again if already released")
    qrelease.add_argument("--json", action="store_true")
    qrelease.set_defaults(func=cmd_quarantine_release)
    qdelete = qsub.add_parser("delete", help="delete a quarantined message")
    qdelete.add_argument("id")
    qdelete.add_argument("--json", action="store_true")
    qdelete.set_defaults(func=cmd_quarantine_delete)
    load_plugins(sub)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
