"""`mailgw quarantine ...`: the quarantine commands of the administrator's CLI (over the reporting API)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

import httpx

from .cli import _call, _get

LIST_FILTERS = ("recipient", "sender", "kind", "state", "subject", "min_score", "max_score", "since", "until")


def _path(message_id: str, suffix: str = "") -> str:
    return f"/api/v1/quarantine/{quote(message_id, safe='')}{suffix}"


def _matches(recipient: str, wanted: str | None) -> bool:
    if not wanted:
        return True
    if wanted.startswith("@"):
        return recipient.lower().endswith(wanted.lower())
    return recipient.lower() == wanted.lower()


def rows_of(item: dict[str, Any], recipient_filter: str | None) -> list[dict[str, Any]]:
    """One row per recipient of a quarantined message (those the filter names)."""
    return [
        {"id": item.get("id"), "kind": item.get("kind"), "sender": item.get("sender"), "recipient": recipient,
         "subject": item.get("subject"), "score": item.get("score"), "received": item.get("received_at"),
         "quarantined": item.get("quarantined_at"), "expires": item.get("expires_at"),
         "state": item.get("state", "quarantined"), "released": recipient in item.get("released_to", []),
         "size": item.get("size")}
        for recipient in item.get("recipients", []) if _matches(recipient, recipient_filter)
    ]


def cmd_list(args: argparse.Namespace) -> None:
    """One line per quarantined message and recipient (JSON objects with --json); --all follows the pages."""
    params = {name: str(getattr(args, name) or "") for name in LIST_FILTERS}
    params["limit"] = str(args.limit)
    offset = args.offset
    while True:
        data = _get(args.api, "/api/v1/quarantine", {**params, "offset": str(offset) if offset else ""})
        page = data if isinstance(data, dict) else {}
        for item in page.get("items", []):
            for row in rows_of(item, args.recipient):
                if args.json:
                    print(json.dumps(row))
                else:
                    print(f"{str(row['received'] or '')[:19]}  {row['id']:26}  {row['kind']:7} {row['state']:11} "
                          f"score={row['score']}  {row['sender']} -> {row['recipient']}  {row['subject']}")
        next_offset = page.get("next_offset")
        if not args.all or not isinstance(next_offset, int):
            break
        offset = next_offset


def cmd_show(args: argparse.Namespace) -> None:
    print(json.dumps(_get(args.api, _path(args.id), {}), indent=2))


def cmd_view(args: argparse.Namespace) -> None:
    """Headers and text of the message (the HTML is for a browser: /api/v1/quarantine/ID/html)."""
    view = _get(args.api, _path(args.id, "/view"), {})
    if args.json or not isinstance(view, dict):
        print(json.dumps(view))
        return
    for header in view.get("headers", []):
        print(f"{header['name']}: {header['value']}")
    print()
    print(view.get("text", ""))
    for attachment in view.get("attachments", []):
        print(f"[attachment {attachment['index']}: {attachment['filename'] or '(no name)'} "
              f"{attachment['content_type']} {attachment['size']} bytes]")


def cmd_download(args: argparse.Namespace) -> None:
    try:
        response = httpx.get(args.api.rstrip("/") + _path(args.id, "/raw"), timeout=60)
    except httpx.HTTPError as exc:
        raise SystemExit(f"mailgw: cannot reach the reporting API at {args.api}: {exc}") from exc
    if response.status_code >= 400:
        raise SystemExit(f"mailgw: {response.status_code}: {response.text[:500]}")
    if args.output == "-":
        sys.stdout.buffer.write(response.content)
    else:
        with open(args.output or f"{args.id}.eml", "wb") as out:
            out.write(response.content)


def cmd_release(args: argparse.Namespace) -> None:
    body = {"recipients": args.recipient} if args.recipient else None
    answer = _call(args.api, "POST", _path(args.id, "/release"), {"force": "true" if args.force else ""}, body)
    if args.json:
        print(json.dumps(answer))
    else:
        recipients = answer.get("recipients")
        print(f"released {args.id} to {', '.join(recipients) if isinstance(recipients, list) else recipients}")


def cmd_delete(args: argparse.Namespace) -> None:
    answer = _call(args.api, "DELETE", _path(args.id))
    print(json.dumps(answer) if args.json else f"deleted {args.id}")


def cmd_list_sender(args: argparse.Namespace) -> None:
    body = {"recipients": args.recipient} if args.recipient else None
    answer = _call(args.api, "POST", _path(args.id, f"/{args.quarantine_command}"), None, body)
    entries = answer.get("entries")
    if args.json or not isinstance(entries, dict):
        print(json.dumps(answer))
    else:
        for owner, pattern in entries.items():
            print(f"{args.quarantine_command}: {pattern} for {owner}")


def cmd_learn(args: argparse.Namespace) -> None:
    answer = _call(args.api, "POST", _path(args.id, "/learn"), None,
                   {"label": args.label, **({"recipient": args.recipient} if args.recipient else {})})
    print(json.dumps(answer) if args.json else f"learning {args.id} as {args.label}")


def cmd_report(args: argparse.Namespace) -> None:
    answer = _call(args.api, "POST", "/api/v1/quarantine-reports")
    print(json.dumps(answer) if args.json else f"sent {answer.get('reports')} spam report(s)")


def register(sub: argparse._SubParsersAction) -> None:
    """`mailgw quarantine ...` under the CLI's subcommands."""
    quarantine = sub.add_parser("quarantine", help="quarantined mail: list, view, release, delete, lists, learn")
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True)

    qlist = qsub.add_parser("list", help="one line per quarantined message and recipient")
    qlist.add_argument("--recipient", help="user@example.com, or @example.com for a domain")
    qlist.add_argument("--sender", help="user@example.org, or @example.org")
    qlist.add_argument("--kind", help="spam, virus, attachment, policy, ...")
    qlist.add_argument("--state", choices=["quarantined", "released", "deleted", "any"],
                       help="default: all but deleted")
    qlist.add_argument("--subject", help="subject contains this (case-insensitive)")
    qlist.add_argument("--min-score", dest="min_score", type=float)
    qlist.add_argument("--max-score", dest="max_score", type=float)
    qlist.add_argument("--since", help="received at or after (ISO 8601)")
    qlist.add_argument("--until", help="received before (ISO 8601)")
    qlist.add_argument("--limit", type=int, default=100, help="messages per page (1..1000)")
    qlist.add_argument("--offset", type=int, default=0, help="skip this many messages")
    qlist.add_argument("--all", action="store_true", help="every page, not only the first")
    qlist.add_argument("--json", action="store_true")
    qlist.set_defaults(func=cmd_list)

    qshow = qsub.add_parser("show", help="details of one quarantined message (JSON)")
    qshow.add_argument("id")
    qshow.set_defaults(func=cmd_show)

    qview = qsub.add_parser("view", help="headers and text of one quarantined message")
    qview.add_argument("id")
    qview.add_argument("--json", action="store_true", help="headers, text, sanitised HTML, attachments")
    qview.set_defaults(func=cmd_view)

    qdownload = qsub.add_parser("download", help="the original message (.eml)")
    qdownload.add_argument("id")
    qdownload.add_argument("-o", "--output", help="file (default ID.eml; - for standard output)")
    qdownload.set_defaults(func=cmd_download)

    qrelease = qsub.add_parser("release", help="deliver a quarantined message to its recipients")
    qrelease.add_argument("id")
    qrelease.add_argument("--recipient", action="append", help="only this recipient (repeatable)")
    qrelease.add_argument("--force", action="store_true", help="release again if already released")
    qrelease.add_argument("--json", action="store_true")
    qrelease.set_defaults(func=cmd_release)

    qdelete = qsub.add_parser("delete", help="delete a quarantined message")
    qdelete.add_argument("id")
    qdelete.add_argument("--json", action="store_true")
    qdelete.set_defaults(func=cmd_delete)

    for name, what in (("welcomelist", "welcomelist"), ("blocklist", "blocklist")):
        qlists = qsub.add_parser(name, help=f"{what} the sender for the message's recipients")
        qlists.add_argument("id")
        qlists.add_argument("--recipient", action="append", help="only for this recipient (repeatable)")
        qlists.add_argument("--json", action="store_true")
        qlists.set_defaults(func=cmd_list_sender)

    qlearn = qsub.add_parser("learn", help="train the Bayes filter with the message (mail.learn)")
    qlearn.add_argument("id")
    label = qlearn.add_mutually_exclusive_group(required=True)
    label.add_argument("--spam", dest="label", action="store_const", const="spam")
    label.add_argument("--ham", dest="label", action="store_const", const="ham")
    qlearn.add_argument("--recipient", help="the user whose database learns it (per-user Bayes)")
    qlearn.add_argument("--json", action="store_true")
    qlearn.set_defaults(func=cmd_learn)

    qreport = qsub.add_parser("report", help="send the spam reports now (new quarantined mail per recipient)")
    qreport.add_argument("--json", action="store_true")
    qreport.set_defaults(func=cmd_report)
