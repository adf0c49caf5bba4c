"""HTTP API of the reporting service (JSON, under /api/v1).

Query parameters are checked before any query runs: an unknown, repeated or malformed parameter
is answered 400 with {"error": "bad_request", "detail": "..."}; an unknown quarantine id 404;
ClickHouse unreachable 503.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .queries import QuarantineQuery, TrackingQuery, Window
from .store import ReportStore, StoreUnavailable

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


def routes(store: ReportStore) -> list[BaseRoute]:
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
        p = params_of(request, ("recipient", "sender", "kind", "limit"))
        query = QuarantineQuery(
            sender=parse_address("sender", p.get("sender")),
            recipient=parse_address("recipient", p.get("recipient")),
            kind=parse_kind(p.get("kind")),
            limit=parse_limit(p.get("limit")),
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

    return [
        Route("/api/v1/stats/summary", guarded(summary), methods=["GET"]),
        Route("/api/v1/stats/dead-letters", guarded(dead_letters), methods=["GET"]),
        Route("/api/v1/tracking", guarded(tracking), methods=["GET"]),
        Route("/api/v1/quarantine", guarded(quarantine_list), methods=["GET"]),
        Route("/api/v1/quarantine/{message_id}", guarded(quarantine_get), methods=["GET"]),
        Route("/api/v1/quarantine/{message_id}/raw", guarded(quarantine_raw), methods=["GET"]),
    ]
