"""What can be done to a quarantined message: release, delete, list its sender, learn from it.

Shared by the administrator's API and the one-click links of the spam report. Operations are
serialised in the process (one reporting process owns the data), so two concurrent releases cannot
both pass the "already released" check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mailgw_libs import bus, frames, topics
from mailgw_libs.events import Direction, Fate, LearnRequest, MailAction, RecipientDecision, SymbolHit, new_message_id
from mailgw_libs.userlists import InvalidEntry, ListKind, UserListStore

from .store import Clock, ReportStore, system_clock

log = logging.getLogger("mailgw.reporting.operations")

RELEASE_RULE = "released"
LEARN_SOURCE = "quarantine"

# Publishes (body, topic, key) to Kafka and waits for the acknowledgement.
Publish = Callable[[bytes, str, str], Awaitable[None]]


class NotFound(LookupError):
    """No such quarantined message (unknown, expired or deleted)."""


class Conflict(RuntimeError):
    """The operation was done already (a release to the same recipient)."""


class Refused(ValueError):
    """The request names something the message does not have (a recipient of another message...)."""


class Unavailable(RuntimeError):
    """A component the operation needs is missing or down (Kafka, Redis): try again later."""


@dataclass(frozen=True)
class Released:
    recipients: list[str]
    release_id: str
    at: datetime


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


class QuarantineOps:
    def __init__(self, store: ReportStore, publish: Publish | None = None, userlists: UserListStore | None = None,
                 clock: Clock = system_clock) -> None:
        self.store = store
        self.publish = publish
        self.userlists = userlists
        self.clock = clock
        self._lock = asyncio.Lock()

    async def item(self, message_id: str) -> dict[str, Any]:
        item = await self.store.quarantine_get(message_id)
        if item is None:
            raise NotFound(f"no quarantined message {message_id}")
        return item

    @staticmethod
    def recipient_of(item: dict[str, Any], recipient: str) -> str:
        """The recipient as the message names it; Refused if it is not one of the message's."""
        original = {r.lower(): r for r in item["recipients"]}
        if recipient.lower() not in original:
            raise Refused(f"not a recipient of {item['id']}: {recipient}")
        return original[recipient.lower()]

    async def _publish(self, body: bytes, topic: str, key: str) -> None:
        if self.publish is None:
            raise Unavailable("this reporting instance cannot publish")
        try:
            await self.publish(body, topic, key)
        except (bus.TransientError, *bus.TRANSIENT_ERRORS) as exc:  # type: ignore[misc]
            raise Unavailable(f"cannot publish: {exc!r}") from exc

    async def release(self, message_id: str, wanted: list[str] | None, force: bool = False) -> Released:
        """Publish the original to delivery for `wanted` (None: every recipient not released yet), then
        record the release. Conflict when a recipient was released already (unless `force`)."""
        async with self._lock:
            item = await self.item(message_id)
            raw = await self.store.quarantine_raw(message_id)
            if raw is None:
                raise NotFound(f"no quarantined message {message_id}")
            released = {r.lower() for r in item["released_to"]}
            if wanted is None:  # every original recipient not released yet (all of them with force)
                recipients = [r for r in item["recipients"] if force or r.lower() not in released]
            else:
                recipients = [self.recipient_of(item, r) for r in wanted]
            again = [r for r in recipients if r.lower() in released]
            if not recipients or (again and not force):
                raise Conflict(f"{message_id} was already released to {', '.join(again or item['released_to'])}")
            direction, client_ip = await self.store.message_origin(message_id)
            now, release_id = self.clock(), new_message_id()
            action = release_action(item, recipients, direction, client_ip, release_id, now)
            frame = await asyncio.to_thread(frames.pack, action, raw)
            await self._publish(frame, topics.MAIL_ACTIONS, message_id)
            await self.store.record_quarantine_op(message_id, "released", release_id, now, recipients)
        log.info("released from quarantine", extra={"message_id": message_id, "recipients": recipients,
                                                    "release_id": release_id, "force": force})
        return Released(recipients, release_id, now)

    async def delete(self, message_id: str) -> datetime:
        async with self._lock:
            await self.item(message_id)
            now = self.clock()
            await self.store.record_quarantine_op(message_id, "deleted", new_message_id(), now, [])
        log.info("deleted from quarantine", extra={"message_id": message_id})
        return now

    async def delete_for(self, message_id: str, recipient: str) -> None:
        """Delete one recipient's copy (a report's delete link): the whole message when it is that recipient's
        alone, otherwise the recipient is recorded as having dismissed it (not listed to them again, not
        released to them by their links) and the message stays for the other recipients."""
        async with self._lock:
            item = await self.item(message_id)
            recipient = self.recipient_of(item, recipient)
            if recipient.lower() in item["dismissed_by"]:
                raise NotFound(f"{message_id} was already deleted for {recipient}")
            now = self.clock()
            if {r.lower() for r in item["recipients"]} - set(item["dismissed_by"]) == {recipient.lower()}:
                await self.store.record_quarantine_op(message_id, "deleted", new_message_id(), now, [])
            else:
                await self.store.record_quarantine_op(message_id, "dismissed", new_message_id(), now, [recipient])
        log.info("deleted from quarantine for one recipient", extra={"message_id": message_id})

    async def check_recipient(self, message_id: str, recipient: str) -> dict[str, Any]:
        """The item, if `recipient` is one of its recipients and has not deleted their copy."""
        item = await self.item(message_id)
        recipient = self.recipient_of(item, recipient)
        if recipient.lower() in item["dismissed_by"]:
            raise NotFound(f"{message_id} was deleted for {recipient}")
        return item

    async def list_sender(self, message_id: str, kind: ListKind, recipients: list[str] | None) -> dict[str, str]:
        """Put the message's sender on the welcomelist or blocklist of each recipient (None: all of them);
        recipient -> stored pattern."""
        if self.userlists is None:
            raise Unavailable("this reporting instance has no user lists")
        item = await self.item(message_id)
        owners = [self.recipient_of(item, r) for r in recipients] if recipients else list(item["recipients"])
        if not item["sender"]:
            raise Refused(f"{message_id} has the null sender: there is no address to list")
        out: dict[str, str] = {}
        for owner in owners:
            try:
                out[owner] = await self.userlists.add(owner, kind, item["sender"])
            except InvalidEntry as exc:
                raise Refused(str(exc)) from exc
            except bus.TRANSIENT_ERRORS as exc:
                raise Unavailable(f"user lists unavailable: {exc!r}") from exc
        log.info("sender listed from quarantine", extra={"message_id": message_id, "list": kind, "owners": owners})
        return out

    async def learn(self, message_id: str, label: Literal["spam", "ham"], recipient: str = "") -> LearnRequest:
        """Publish the message to `mail.learn` as spam or ham (source "quarantine")."""
        item = await self.item(message_id)
        if recipient:
            recipient = self.recipient_of(item, recipient)
        raw = await self.store.quarantine_raw(message_id)
        if raw is None:
            raise NotFound(f"no quarantined message {message_id}")
        request = LearnRequest(message_id=message_id, label=label, source=LEARN_SOURCE, requested_at=self.clock(),
                               recipient=recipient)
        frame = await asyncio.to_thread(frames.pack, request, raw)
        await self._publish(frame, topics.MAIL_LEARN, message_id)
        log.info("learn request from quarantine", extra={"message_id": message_id, "label": label})
        return request
