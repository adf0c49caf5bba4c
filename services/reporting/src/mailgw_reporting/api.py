"""HTTP API of the reporting service (JSON, under /api/v1).

Query parameters are checked before any query runs: an unknown, repeated or malformed parameter
is answered 400 with {"error": "bad_request", "detail": "..."}; an unknown quarantine id 404;
ClickHouse unreachable 503.

Quarantine operations: a release publishes the stored original to delivery on `mail.actions` as an
action accepting the original recipients (rule `released`, a `release_id` of its own), then records
the release; a deletion is recorded and hides the message. Operations are serialised in the process
(one reporting process owns the data), so two concurrent releases cannot both pass the 409 check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import Direction, Fate, MailAction, RecipientDecision, SymbolHit, new_message_id

from .queries import QUARANTINE_STATES, QuarantineQuery, TrackingQuery, Window
from .store import ReportStore, StoreUnavailable

log = logging.getLogger("mailgw.reporting.api")

RELEASE_RULE = "released"
MAX_BODY = 64 * 1024

# Publishes (body, topic, key) to Kafka and waits for the acknowledgement.
Publish = Callable[[bytes, str, str], Awaitable[None]]

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


async def release_recipients(request: Request) -> list[str] | None:
    """The recipients named in the JSON body `{"recipients": [...]}`; None without a body."""
    body = await request.body()
    if not body.strip():
        return None
    if len(body) > MAX_BODY:
        raise BadRequest("request body too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("the body must be JSON: {\"recipients\": [\"user@example.com\"]}") from None
    recipients = data.get("recipients") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or set(data) - {"recipients"} or not isinstance(recipients, list)
            or not recipients or not all(isinstance(r, str) and r for r in recipients)):
        raise BadRequest("the body must be {\"recipients\": [\"user@example.com\", ...]} (a non-empty list)")
    return list(dict.fromkeys(recipients))


def release_action(item: dict[str, Any], recipients: list[str], direction: str, client_ip: str,
                   release_id: str, now: datetime) -> MailAction:
    """The action that delivers a quarantined message to `recipients`, as decided by the release."""
    spam = "spam" in item["kind"].split(",")
    return MailAction(
        message_id=item["id"], decided_at=now, received_at=datetime.fromisoformat(item["received_at"]),
        mail_from=item["sender"], direction=Direction(direction) if direction in ("in", "out") else Direction.INBOUND,
        client_ip=client_ip, subject=item["subject"], score=item["score"],
        symbols=[SymbolHit(name=s["name"], score=s["score"], detail=s["detail"]) for s in item.get("symbols", [])],
        viruses=list(item.get("viruses", [])),
        decisions=[RecipientDecision(recipient=r, fate=Fate.ACCEPT, rule=RELEASE_RULE, spam=spam) for r in recipients],
        release_id=release_id,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """400 for bad parameters, 503 while ClickHouse is unavailable."""

    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadRequest as exc:
            return error(400, "bad_request", str(exc))
        except StoreUnavailable as exc:
            return error(503, "unavailable", str(exc))

    return wrapper


def routes(store: ReportStore, publish: Publish | None = None) -> list[BaseRoute]:
    """The API over `store`; `publish` sends releases to delivery (without it, a release answers 503)."""
    operations = asyncio.Lock()

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
        p = params_of(request, ("recipient", "sender", "kind", "state", "limit"))
        query = QuarantineQuery(
            sender=parse_address("sender", p.get("sender")),
            recipient=parse_address("recipient", p.get("recipient")),
            kind=parse_kind(p.get("kind")),
            limit=parse_limit(p.get("limit")),
            state=parse_state(p.get("state")),
        )
        items = await store.quarantine_list(query)
        return JSONResponse({"items": items, "count": len(items), "limit": query.limit})

    async def quarantine_get(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        item = await store.quarantine_get(message_id)
        if item is None:
            return error(404, "not_found", f"no quarantined message {message_id}")
        return JSONResponse(item)

    async def quarantine_raw(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        raw = await store.quarantine_raw(message_id)
        if raw is None:
            return error(404, "not_found", f"no quarantined message {message_id}")
        return Response(raw, media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{message_id}.eml"'})

    async def quarantine_release(request: Request) -> Response:
        force = parse_bool("force", params_of(request, ("force",)).get("force"))
        message_id = parse_message_id(request.path_params["message_id"])
        wanted = await release_recipients(request)
        if publish is None:
            return error(503, "unavailable", "this reporting instance cannot publish releases")
        async with operations:
            item = await store.quarantine_get(message_id)
            raw = await store.quarantine_raw(message_id) if item is not None else None
            if item is None or raw is None:
                return error(404, "not_found", f"no quarantined message {message_id}")
            original = {r.lower(): r for r in item["recipients"]}
            unknown = [r for r in wanted or () if r.lower() not in original]
            if unknown:
                raise BadRequest(f"not recipients of {message_id}: {', '.join(unknown)}")
            released = {r.lower() for r in item["released_to"]}
            if wanted is None:  # every original recipient not released yet (all of them with force)
                recipients = [r for r in item["recipients"] if force or r.lower() not in released]
            else:
                recipients = [original[r.lower()] for r in wanted]
            again = [r for r in recipients if r.lower() in released]
            if not recipients or (again and not force):
                return error(409, "conflict", f"{message_id} was already released to "
                             f"{', '.join(again or item['released_to'])}; add ?force=true to release it again")
            direction, client_ip = await store.message_origin(message_id)
            now, release_id = datetime.now(UTC), new_message_id()
            action = release_action(item, recipients, direction, client_ip, release_id, now)
            frame = await asyncio.to_thread(frames.pack, action, raw)
            try:
                await publish(frame, topics.MAIL_ACTIONS, message_id)
            except (bus.TransientError, *bus.TRANSIENT_ERRORS) as exc:  # type: ignore[misc]
                return error(503, "unavailable", f"cannot publish the release: {exc!r}")
            await store.record_quarantine_op(message_id, "released", release_id, now, recipients)
        log.info("released from quarantine", extra={"message_id": message_id, "recipients": recipients,
                                                    "release_id": release_id, "force": force})
        return JSONResponse({"id": message_id, "state": "released", "recipients": recipients,
                             "release_id": release_id, "released_at": now.isoformat()}, status_code=202)

    async def quarantine_delete(request: Request) -> Response:
        params_of(request, ())
        message_id = parse_message_id(request.path_params["message_id"])
        async with operations:
            item = await store.quarantine_get(message_id)
            if item is None:
                return error(404, "not_found", f"no quarantined message {message_id}")
            now = datetime.now(UTC)
            await store.record_quarantine_op(message_id, "deleted", new_message_id(), now, [])
        log.info("deleted from quarantine", extra={"message_id": message_id})
        return JSONResponse({"id": message_id, "state": "deleted", "deleted_at": now.isoformat()})

    return [
        Route("/api/v1/stats/summary", guarded(summary), methods=["GET"]),
        Route("/api/v1/stats/dead-letters", guarded(dead_letters), methods=["GET"]),
        Route("/api/v1/tracking", guarded(tracking), methods=["GET"]),
        Route("/api/v1/quarantine", guarded(quarantine_list), methods=["GET"]),
        Route("/api/v1/quarantine/{message_id}", guarded(quarantine_get), methods=["GET"]),
        Route("/api/v1/quarantine/{message_id}", guarded(quarantine_delete), methods=["DELETE"]),
        Route("/api/v1/quarantine/{message_id}/release", guarded(quarantine_release), methods=["POST"]),
        Route("/api/v1/quarantine/{message_id}/raw", guarded(quarantine_raw), methods=["GET"]),
    ]
