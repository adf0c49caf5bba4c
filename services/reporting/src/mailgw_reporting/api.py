"""HTTP API of the reporting service (JSON, under /api/v1).

Query parameters are checked before any query runs: an unknown, repeated or malformed parameter
is answered 400 with {"error": "bad_request", "detail": "..."}; an unknown quarantine id 404;
ClickHouse unreachable 503.

Quarantine operations (`operations.QuarantineOps`): a release publishes the stored original to
delivery on `mail.actions` as an action accepting the original recipients (rule `released`, a
`release_id` of its own), then records the release; a deletion is recorded and hides the message;
the sender can be put on a recipient's welcomelist or blocklist; the message can be sent to
`mail.learn` as spam or ham. The reading view shows the message's HTML sanitised (`render`).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailgw_libs.userlists import ListKind, UserListStore

from . import render
from .digest import SpamReporter
from .operations import Conflict, NotFound, Publish, QuarantineOps, Refused, Unavailable
from .queries import QUARANTINE_STATES, QuarantineQuery, TrackingQuery, Window
from .store import ReportStore, StoreUnavailable

MAX_BODY = 64 * 1024
MAX_SUBJECT_FILTER = 500
MAX_OFFSET = 1_000_000

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ADDRESS = 320
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9._:@+=-]{1,128}$")
_KIND = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BadRequest(ValueError):
    """A query parameter is wrong; the message says which and why."""


def error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def params_of(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, non-empty ones only; unknown or repeated names are refused."""
    out: dict[str, str] = {}
    for name in request.query_params:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name!r}; allowed: {', '.join(allowed)}")
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise BadRequest(f"parameter {name!r} given {len(values)} times")
        if values[0].strip():
            out[name] = values[0].strip()
    return out


def parse_time(name: str, value: str | None) -> datetime | None:
    """ISO 8601 (date, or date and time, with an offset or Z; without one it is UTC)."""
    if value is None:
        return None
    candidates = [value]
    if " " in value:  # an unencoded '+' of an offset arrives as a space
        candidates.append(value.replace(" ", "+"))
    for candidate in candidates:
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        if not 1970 <= parsed.year < 2200:
            raise BadRequest(f"{name} must be between 1970 and 2199, got {value!r}")
        return parsed
    raise BadRequest(f"{name} must be an ISO 8601 date or time (e.g. 2024-05-01T12:00:00Z), got {value!r}")


def parse_window(params: dict[str, str]) -> Window:
    since = parse_time("since", params.get("since"))
    until = parse_time("until", params.get("until"))
    if since is not None and until is not None and since >= until:
        raise BadRequest("since must be before until")
    return Window(since, until)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {value!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def parse_address(name: str, value: str | None) -> str:
    """An address filter: `user@domain` (that address) or `@domain` (the whole domain)."""
    if value is None:
        return ""
    if len(value) > MAX_ADDRESS or "@" not in value or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise BadRequest(f"{name} must be an address (user@example.com) or a domain (@example.com), got {value!r}")
    return value


def parse_kind(value: str | None) -> str:
    if value is None:
        return ""
    if not _KIND.match(value):
        raise BadRequest(f"kind must be a word like spam, virus or policy, got {value!r}")
    return value


def parse_message_id(value: str) -> str:
    if not _MESSAGE_ID.match(value):
        raise BadRequest("invalid message id")
    return value


def parse_state(value: str | None) -> str:
    if value is None:
        return ""
    if value not in (*QUARANTINE_STATES, "any"):
        raise BadRequest(f"state must be one of {', '.join((*QUARANTINE_STATES, 'any'))}, got {value!r}")
    return value


def parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name} must be true or false, got {value!r}")


def parse_float(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise BadRequest(f"{name} must be a finite number, got {value!r}")
    return number


def parse_offset(value: str | None) -> int:
    if value is None:
        return 0
    if not value.isdigit() or int(value) > MAX_OFFSET:
        raise BadRequest(f"offset must be an integer from 0 to {MAX_OFFSET}, got {value!r}")
    return int(value)


def parse_subject(value: str | None) -> str:
    if value is None:
        return ""
    if len(value) > MAX_SUBJECT_FILTER or any(ord(ch) < 32 for ch in value):
        raise BadRequest(f"subject must be text of at most {MAX_SUBJECT_FILTER} characters")
    return value


async def json_body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of the body ({} without a body); unknown keys refused."""
    body = await request.body()
    if not body.strip():
        return {}
    if len(body) > MAX_BODY:
        raise BadRequest("request body too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("the body must be JSON (an object)") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(data) - set(allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(allowed)}")
    return data


def recipients_field(data: dict[str, Any]) -> list[str] | None:
    """`recipients`: a non-empty list of addresses, or absent (None)."""
    if "recipients" not in data:
        return None
    recipients = data["recipients"]
    if (not isinstance(recipients, list) or not recipients or len(recipients) > 1000
            or not all(isinstance(r, str) and 0 < len(r) <= MAX_ADDRESS for r in recipients)):
        raise BadRequest("recipients must be a non-empty list of addresses")
    return list(dict.fromkeys(recipients))


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """400 for bad parameters, 404 unknown message, 409 done already, 503 while a component is unavailable."""

    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (BadRequest, Refused) as exc:
            return error(400, "bad_request", str(exc))
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except Conflict as exc:
            return error(409, "conflict", str(exc))
        except (StoreUnavailable, Unavailable) as exc:
            return error(503, "unavailable", str(exc))

    return wrapper


def routes(store: ReportStore, publish: Publish | None = None, userlists: UserListStore | None = None,
           ops: QuarantineOps | None = None, reporter: SpamReporter | None = None) -> list[BaseRoute]:
    """The API over `store`; `publish` sends releases and learn requests (without it they answer 503),
    `userlists` takes welcomelist/blocklist entries, `reporter` sends spam reports on demand (503 without)."""
    ops = ops or QuarantineOps(store, publish, userlists)

    async def summary(request: Request) -> Response:
        window = parse_window(params_of(request, ("since", "until")))
        return JSONResponse(await store.summary(window))

    async def dead_letters(request: Request) -> Response:
        window = parse_window(params_of(request, ("since", "until")))
        return JSONResponse(await store.dead_letters(window))

    async def tracking(request: Request) -> Response:
        p = params_of(request, ("sender", "recipient", "since", "until", "limit"))
        query = TrackingQuery(
            sender=parse_address("sender", p.get("sender")),
            recipient=parse_address("recipient", p.get("recipient")),
            window=parse_window(p),
            limit=parse_limit(p.get("limit")),
        )
        rows = await store.tracking(query)
        return JSONResponse({"rows": rows, "count": len(rows), "limit": query.limit})

    async def quarantine_list(request: Request) -> Response:
        p = params_of(request, ("recipient", "sender", "kind", "state", "limit", "offset", "subject", "min_score",
                                "max_score", "since", "until"))
        query = QuarantineQuery(
            sender=parse_address("sender", p.get("sender")),
            recipient=parse_address("recipient", p.get("recipient")),
            kind=parse_kind(p.get("kind")),
            limit=parse_limit(p.get("limit")),
            state=parse_state(p.get("state")),
            subject=parse_subject(p.get("subject")),
            min_score=parse_float("min_score", p.get("min_score")),
            max_score=parse_float("max_score", p.get("max_score")),
            window=parse_window(p),
            offset=parse_offset(p.get("offset")),
        )
        if query.min_score is not None and query.max_score is not None and query.min_score > query.max_score:
            raise BadRequest("min_score must not be above max_score")
        items = await store.quarantine_list(query)
        more = len(items) == query.limit
        return JSONResponse({"items": items, "count": len(items), "limit": query.limit, "offset": query.offset,
                             "next_offset": query.offset + len(items) if more else None})

    async def quarantine_get(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        return JSONResponse(await ops.item(message_id))

    async def raw_of(message_id: str) -> bytes:
        raw = await store.quarantine_raw(message_id)
        if raw is None:
            raise NotFound(f"no quarantined message {message_id}")
        return raw

    async def quarantine_raw(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        raw = await raw_of(message_id)
        return Response(raw, media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{message_id}.eml"'})

    def part_url(message_id: str) -> Callable[[int], str]:
        return lambda index: f"/api/v1/quarantine/{message_id}/part/{index}"

    async def quarantine_view(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        raw = await raw_of(message_id)
        view = await asyncio.to_thread(render.view, raw, part_url(message_id))
        return JSONResponse({"id": message_id, **view.as_dict(),
                             "html_url": f"/api/v1/quarantine/{message_id}/html" if view.html is not None else None})

    async def quarantine_html(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        raw = await raw_of(message_id)
        view = await asyncio.to_thread(render.view, raw, part_url(message_id))
        body = view.html if view.html is not None else f"<pre>{html.escape(view.text)}</pre>"
        return HTMLResponse(render.html_document(body, f"Quarantined message {message_id}"),
                            headers=render.SAFE_HEADERS)

    async def quarantine_part(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        index = request.path_params["index"]
        raw = await raw_of(message_id)
        image = await asyncio.to_thread(render.inline_image, raw, index)
        if image is None:
            raise NotFound(f"{message_id} has no inline image {index}")
        data, content_type = image
        return Response(data, media_type=content_type, headers={**render.SAFE_HEADERS,
                                                                "Content-Disposition": "inline"})

    async def quarantine_release(request: Request) -> Response:
        force = parse_bool("force", params_of(request, ("force",)).get("force"))
        message_id = parse_message_id(request.path_params["message_id"])
        wanted = recipients_field(await json_body(request, ("recipients",)))
        try:
            done = await ops.release(message_id, wanted, force)
        except Conflict as exc:
            raise Conflict(f"{exc}; add ?force=true to release it again") from None
        return JSONResponse({"id": message_id, "state": "released", "recipients": done.recipients,
                             "release_id": done.release_id, "released_at": done.at.isoformat()}, status_code=202)

    async def quarantine_delete(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        at = await ops.delete(message_id)
        return JSONResponse({"id": message_id, "state": "deleted", "deleted_at": at.isoformat()})

    def list_sender(kind: ListKind) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            params_of(request, ())
            message_id = parse_message_id(request.path_params["message_id"])
            recipients = recipients_field(await json_body(request, ("recipients",)))
            listed = await ops.list_sender(message_id, kind, recipients)
            return JSONResponse({"id": message_id, "list": kind, "entries": listed})
        return endpoint

    async def quarantine_learn(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        data = await json_body(request, ("label", "recipient"))
        label, recipient = data.get("label"), data.get("recipient", "")
        if label not in ("spam", "ham"):
            raise BadRequest('label must be "spam" or "ham"')
        if not isinstance(recipient, str) or len(recipient) > MAX_ADDRESS:
            raise BadRequest("recipient must be an address")
        learn = await ops.learn(message_id, label, recipient)
        return JSONResponse({"id": message_id, "label": learn.label, "source": learn.source}, status_code=202)

    async def send_reports(request: Request) -> Response:
        """Send the spam reports now, whatever the schedule (the next scheduled run counts from this one)."""
        params_of(request, ())
        if reporter is None or reporter.signer is None:
            raise Unavailable("spam reports are off (no link secret: MAILGW_REPORTING_REPORT_SECRET or the "
                              "configuration's quarantine.spam_report.link_secret_env)")
        sent = await reporter.run_once()
        return JSONResponse({"reports": len(sent), "recipients": sent})

    q = "/api/v1/quarantine/{message_id}"
    return [
        Route("/api/v1/stats/summary", guarded(summary), methods=["GET"]),
        Route("/api/v1/stats/dead-letters", guarded(dead_letters), methods=["GET"]),
        Route("/api/v1/tracking", guarded(tracking), methods=["GET"]),
        Route("/api/v1/quarantine", guarded(quarantine_list), methods=["GET"]),
        Route("/api/v1/quarantine-reports", guarded(send_reports), methods=["POST"]),
        Route(q, guarded(quarantine_get), methods=["GET"]),
        Route(q, guarded(quarantine_delete), methods=["DELETE"]),
        Route(q + "/release", guarded(quarantine_release), methods=["POST"]),
        Route(q + "/raw", guarded(quarantine_raw), methods=["GET"]),
        Route(q + "/view", guarded(quarantine_view), methods=["GET"]),
        Route(q + "/html", guarded(quarantine_html), methods=["GET"]),
        Route(q + "/part/{index:int}", guarded(quarantine_part), methods=["GET"]),
        Route(q + "/welcomelist", guarded(list_sender("welcome")), methods=["POST"]),
        Route(q + "/blocklist", guarded(list_sender("block")), methods=["POST"]),
        Route(q + "/learn", guarded(quarantine_learn), methods=["POST"]),
    ]
