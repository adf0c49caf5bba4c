"""The pages behind the spam report's one-click links (no login: the signed link is the ticket).

GET shows what the link will do and a button; only POST acts. A mail scanner or a browser that
prefetches links (both common) follows GET links, and must not release or delete anything by doing
so. A tampered link (or one for another purpose) is refused with 403, an expired one with 410, each
with a page saying so; a link acts at most once for its purpose: a second release answers "already
released" (409), a second delete "no longer in quarantine" (404); welcomelisting again changes nothing.
A delete link deletes the recipient's own copy: the message goes when no other recipient has it.
Every page is plain HTML with escaped values and a strict Content-Security-Policy.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .digest import LINK_PATH
from .links import Link, LinkExpired, LinkInvalid, LinkSigner
from .operations import Conflict, NotFound, QuarantineOps, Refused, Unavailable
from .store import StoreUnavailable

log = logging.getLogger("mailgw.reporting.links")

PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

VERBS = {"release": ("Release", "deliver this message to your mailbox"),
         "delete": ("Delete", "delete this message from the quarantine"),
         "welcomelist": ("Welcomelist sender", "always accept mail from this sender")}


def page(status: int, title: str, body: str) -> HTMLResponse:
    document = ("<!doctype html><html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title></head><body style=\"font-family:sans-serif;max-width:40em\">"
                f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(document, status_code=status, headers=PAGE_HEADERS)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def routes(signer: LinkSigner | Callable[[], LinkSigner | None] | None, ops: QuarantineOps) -> list[BaseRoute]:
    """The link endpoints; without a signer (no secret configured) every link is refused. `signer` may be a
    function giving the signer in force (it follows the configuration)."""
    current: Callable[[], LinkSigner | None] = signer if callable(signer) else (lambda: signer)

    def check(request: Request) -> Link | Response:
        purpose, token = request.path_params["purpose"], request.path_params["token"]
        signer = current()
        if signer is None:
            return page(403, "Link not accepted", paragraph("Quarantine links are not enabled on this gateway."))
        try:
            return signer.check(purpose, token)
        except LinkExpired:
            return page(410, "This link has expired",
                        paragraph("The link is too old. Links of a quarantine report work for a limited time; "
                                  "use a newer report or ask your administrator."))
        except LinkInvalid:
            log.warning("refused a quarantine link", extra={"purpose": purpose[:32]})
            return page(403, "This link is not valid",
                        paragraph("The link is damaged or was changed. Nothing was done."))

    async def describe(link: Link) -> str:
        item = await ops.check_recipient(link.message_id, link.recipient)
        return (f"<p>From: {html.escape(item['sender'] or '<>')}<br>Subject: {html.escape(item['subject'])}<br>"
                f"Received: {html.escape(item['received_at'] or '')}</p>")

    async def failure(exc: Exception) -> Response:
        if isinstance(exc, NotFound):
            return page(404, "Message not found", paragraph("The message is no longer in the quarantine "
                                                            "(deleted, expired or released)."))
        if isinstance(exc, Conflict):
            return page(409, "Already done", paragraph("This message was already released to you."))
        if isinstance(exc, Refused):
            return page(400, "Not possible", paragraph(str(exc)))
        return page(503, "Try again later", paragraph("The quarantine is unavailable right now. Nothing was done."))

    async def show(request: Request) -> Response:
        link = check(request)
        if isinstance(link, Response):
            return link
        verb, meaning = VERBS[link.purpose]
        try:
            summary = await describe(link)
        except (NotFound, Refused, StoreUnavailable) as exc:
            return await failure(exc)
        form = (f"<form method=\"post\"><button type=\"submit\">{html.escape(verb)}</button></form>")
        return page(200, f"{verb}?", paragraph(f"For {link.recipient}: {meaning}.") + summary + form)

    async def act(request: Request) -> Response:
        link = check(request)
        if isinstance(link, Response):
            return link
        try:
            await describe(link)
            if link.purpose == "release":
                await ops.release(link.message_id, [link.recipient])
                done = "The message was released and is on its way to your mailbox."
            elif link.purpose == "delete":
                await ops.delete_for(link.message_id, link.recipient)
                done = "The message was deleted from your quarantine."
            else:
                entries = await ops.list_sender(link.message_id, "welcome", [link.recipient])
                done = f"Mail from {', '.join(entries.values())} will be accepted for you from now on."
        except (NotFound, Conflict, Refused, StoreUnavailable, Unavailable) as exc:
            return await failure(exc)
        log.info("quarantine link used", extra={"purpose": link.purpose, "message_id": link.message_id})
        return page(200, "Done", paragraph(done))

    path = LINK_PATH + "/{purpose}/{token}"
    return [Route(path, show, methods=["GET"]), Route(path, act, methods=["POST"])]
