"""Applies a MailAction: relays, quarantines or blocks each recipient and reports every result.

Order of effects, all done before the handler returns (the input offset is committed after):

1. quarantine records to mail.quarantine (original bytes), one per (kind, rule);
2. accepted recipients: the ledger is read and recipients already sent are skipped, the rest
   go to the relay in one session; what the relay accepted is written to the ledger;
3. deferred recipients: one retry envelope with the original bytes on the retry topic of the
   next delay, or BOUNCED once the queue lifetime is over;
4. bounced recipients (5xx, or the queue lifetime is over): one DSN to the envelope sender (never to
   the null sender), published as an action on mail.actions; a delay warning once the first attempt
   is `delay_warning_s` old (see dsn.py);
5. one DeliveryResult per recipient to mail.delivery;
6. on the first attempt, the notifications and BCC copies the rules asked for, as actions on
   mail.actions (see notify.py).

A recipient whose decision is `tempfail` (the rules could not judge the message) is deferred like a 4xx
from the relay: retried through the retry topics, bounced after the queue lifetime.

A failure to publish (Kafka) or to read the ledger (Redis) propagates: the input is
redelivered, and the ledger keeps what was already sent from being sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter

from mailgw_libs import frames, topics
from mailgw_libs.events import (
    DeliveryResult,
    DeliveryStatus,
    MailAction,
    QuarantinedMessage,
    RetryEnvelope,
    utcnow,
)

from .dsn import DsnBuilder, RecipientReport, dsn_action
from .notify import bcc_action, notification_action, notification_message
from .plan import DeliveryGroup, QuarantineGroup, plan_action
from .relay import RecipientOutcome, Transaction
from .retry import LIFETIME_EXCEEDED, RetrySchedule

log = logging.getLogger("mailgw.delivery")

RESULTS = Counter("mailgw_delivery_results_total", "Delivery results published, by status", ["status"])

# Larger messages get their header changes in a worker thread (copying megabytes blocks the loop);
# body modifications (MIME parsing) always go to a thread.
INLINE_RENDER_BYTES = 512 * 1024
TEMPFAIL_RESPONSE = "4.7.0 the message could not be judged (tempfail); retried later"

Publish = Callable[[bytes, str, str], Awaitable[None]]  # (body, topic, key)
Clock = Callable[[], datetime]


class Relay(Protocol):
    @property
    def name(self) -> str: ...

    async def deliver(self, transactions: Sequence[Transaction]) -> list[list[RecipientOutcome]]: ...


class Ledger(Protocol):
    async def delivered(self, message_id: str, recipients: Sequence[str]) -> dict[str, str]: ...

    async def mark(self, message_id: str, sent: Sequence[tuple[str, str]]) -> bool: ...


def ledger_value(outcome: RecipientOutcome) -> str:
    return f"{outcome.code} {outcome.response}".strip()


def parse_ledger_value(value: str) -> tuple[int, str]:
    head, _, rest = value.partition(" ")
    return (int(head), rest) if head.isdigit() else (0, value)


def delivery_id(action: MailAction) -> str:
    """The id under which the sends of this action are recorded: the message id, and the release id for a
    release from quarantine (each release is a delivery of its own; its redelivery is not)."""
    return f"{action.message_id}.{action.release_id}" if action.release_id else action.message_id


class FateApplier:
    def __init__(self, relay: Relay, ledger: Ledger, schedule: RetrySchedule, publish: Publish,
                 clock: Clock = utcnow, dsn: DsnBuilder | None = None, delay_warning_s: int = 0,
                 postmaster: str = "postmaster@localhost", helo_name: str = "localhost") -> None:
        self.relay = relay
        self.ledger = ledger
        self.schedule = schedule
        self.publish = publish
        self.clock = clock
        self.dsn = dsn  # None: no DSNs at all
        self.delay_warning_s = delay_warning_s  # 0: no delay warnings
        self.postmaster = postmaster  # sender of notifications
        self.helo_name = helo_name
        # Sends in progress (relay + ledger); a stopping service waits for them (see `drain`).
        self._sending: set[asyncio.Future[list[RecipientOutcome]]] = set()

    async def apply(self, action: MailAction, raw: bytes, recipients: Sequence[str] | None = None,
                    attempt: int = 1, first_attempt_at: datetime | None = None,
                    warned: bool = False) -> list[DeliveryResult]:
        """Handle the action (or, on a retry, only `recipients` of it); returns the results published."""
        now = self.clock()
        first = first_attempt_at or now
        plan = plan_action(action, recipients)
        results: list[DeliveryResult] = []

        def result(recipient: str, status: DeliveryStatus, **fields: object) -> DeliveryResult:
            return DeliveryResult.model_validate(
                {"message_id": action.message_id, "recipient": recipient, "status": status, "at": now,
                 "attempt": attempt, **fields})

        for decision in plan.blocked:
            results.append(result(decision.recipient, DeliveryStatus.BLOCKED,
                                  smtp_response=f"blocked: {decision.rule}"))

        for group in plan.quarantines:
            await self._quarantine(action, raw, group, now)
            results += [result(r, DeliveryStatus.QUARANTINED, smtp_response=f"quarantined ({group.kind})")
                        for r in group.recipients]

        if plan.deliveries or plan.tempfailed:
            tempfailed = [d.recipient for d in plan.tempfailed]
            results += await self._deliver(action, raw, plan.deliveries, attempt, first, now, result, warned,
                                           tempfailed)

        if recipients is None and attempt == 1 and (action.notifications or action.bcc):
            await self._send_extras(action, raw, plan.deliveries, now)

        await asyncio.gather(*(self.publish(r.model_dump_json().encode(), topics.MAIL_DELIVERY, action.message_id)
                               for r in results))
        for r in results:
            RESULTS.labels(r.status.value).inc()
        return results

    async def _quarantine(self, action: MailAction, raw: bytes, group: QuarantineGroup, now: datetime) -> None:
        header = QuarantinedMessage(
            message_id=action.message_id, kind=group.kind, recipients=list(group.recipients),
            mail_from=action.mail_from, subject=action.subject, score=action.score, symbols=action.symbols,
            viruses=action.viruses, received_at=action.received_at, quarantined_at=now, rule=group.rule,
        )
        frame = await asyncio.to_thread(frames.pack, header, raw)
        await self.publish(frame, topics.MAIL_QUARANTINE, action.message_id)
        log.info("quarantined", extra={"message_id": action.message_id, "kind": group.kind,
                                       "recipients": list(group.recipients)})

    async def _deliver(self, action: MailAction, raw: bytes, groups: list[DeliveryGroup], attempt: int,
                       first: datetime, now: datetime, result: Callable[..., DeliveryResult],
                       warned: bool = False, tempfailed: Sequence[str] = ()) -> list[DeliveryResult]:
        relay = self.relay.name
        sends_id = delivery_id(action)
        wanted = [r for g in groups for r in g.recipients]
        already = await self.ledger.delivered(sends_id, wanted)
        results: list[DeliveryResult] = []
        for recipient, value in already.items():
            code, response = parse_ledger_value(value)
            results.append(result(recipient, DeliveryStatus.DELIVERED, smtp_code=code, smtp_response=response,
                                  relay=relay))

        transactions: list[Transaction] = []
        for group in groups:
            todo = tuple(r for r in group.recipients if r not in already)
            if todo:
                message = (group.render(raw) if len(raw) < INLINE_RENDER_BYTES and not group.changes_body
                           else await asyncio.to_thread(group.render, raw))
                transactions.append(Transaction(action.mail_from, todo, message, action.direction))
        outcomes = [RecipientOutcome(r, DeliveryStatus.DEFERRED, 0, TEMPFAIL_RESPONSE) for r in tempfailed]
        if not transactions and not outcomes:
            return results

        if transactions:
            # Shielded: a handler cancelled at shutdown must not stop between the relay's "250" and the
            # ledger write, or the redelivered action would send the message a second time.
            send = asyncio.ensure_future(self._send_and_record(sends_id, transactions))
            self._sending.add(send)
            send.add_done_callback(self._sending.discard)
            outcomes += await asyncio.shield(send)

        deferred = [o for o in outcomes if o.status is DeliveryStatus.DEFERRED]
        step = self.schedule.next_step(attempt, first, now) if deferred else None
        if deferred and step is not None:
            if not warned and self._warning_due(action, first, now):
                reports = [RecipientReport.delayed(o.recipient, o.code, o.response, o.relay or relay)
                           for o in deferred]
                await self._send_dsn(action, raw, reports, f"{sends_id}.delay", now)
                warned = True
            envelope = RetryEnvelope(action=action, recipients=[o.recipient for o in deferred], attempt=step.attempt,
                                     first_attempt_at=first, not_before=step.not_before, warned=warned)
            frame = await asyncio.to_thread(frames.pack, envelope, raw)
            await self.publish(frame, step.topic, action.message_id)
            log.info("deferred", extra={"message_id": action.message_id, "attempt": attempt,
                                        "retry_topic": step.topic, "recipients": envelope.recipients})

        bounces: list[RecipientReport] = []
        for o in outcomes:
            relay = o.relay or self.relay.name
            if o.status is DeliveryStatus.DEFERRED and step is not None:
                results.append(result(o.recipient, DeliveryStatus.DEFERRED, smtp_code=o.code,
                                      smtp_response=o.response, next_attempt_at=step.not_before, relay=relay))
            elif o.status is DeliveryStatus.DEFERRED:
                results.append(result(o.recipient, DeliveryStatus.BOUNCED, smtp_code=o.code,
                                      smtp_response=LIFETIME_EXCEEDED, relay=relay))
                bounces.append(RecipientReport.expired(o.recipient, o.code, o.response, relay))
            elif o.status is DeliveryStatus.BOUNCED:
                results.append(result(o.recipient, DeliveryStatus.BOUNCED, smtp_code=o.code,
                                      smtp_response=o.response, relay=relay))
                bounces.append(RecipientReport.bounced(o.recipient, o.code, o.response, relay))
            else:
                results.append(result(o.recipient, o.status, smtp_code=o.code, smtp_response=o.response,
                                      relay=relay))
        if bounces:
            await self._bounce(action, raw, bounces, f"{sends_id}.dsn{attempt}", now)
        return results

    async def _send_and_record(self, sends_id: str, transactions: list[Transaction]) -> list[RecipientOutcome]:
        outcomes = [o for tx_outcomes in await self.relay.deliver(transactions) for o in tx_outcomes]
        sent = [(o.recipient, ledger_value(o)) for o in outcomes if o.status is DeliveryStatus.DELIVERED]
        await self.ledger.mark(sends_id, sent)
        return outcomes

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for the sends in progress to be recorded (at shutdown, before Redis is closed)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout_s)

    async def _send_extras(self, action: MailAction, raw: bytes, groups: Sequence[DeliveryGroup],
                           now: datetime) -> None:
        """Publish the notifications and BCC copies of the action as actions of their own."""
        for index, note in enumerate(action.notifications, start=1):
            if not note.to:
                continue
            notify_id = f"{delivery_id(action)}.notify{index}"
            try:
                message = await asyncio.to_thread(notification_message, note, raw, self.postmaster, now, notify_id,
                                                  self.helo_name)
            except Exception:  # a notification that cannot be built must not fail the delivery
                log.exception("cannot build the notification", extra={"message_id": action.message_id})
                continue
            frame = frames.pack(notification_action(action, note, notify_id, self.postmaster, now), message)
            await self.publish(frame, topics.MAIL_ACTIONS, notify_id)
        for index, bcc in enumerate(action.bcc, start=1):
            bcc_id = f"{delivery_id(action)}.bcc{index}"
            copy = raw
            if not bcc.original and groups:
                copy = await asyncio.to_thread(groups[0].render, raw)
            frame = await asyncio.to_thread(frames.pack, bcc_action(action, bcc.to, bcc_id, bcc.rule, now), copy)
            await self.publish(frame, topics.MAIL_ACTIONS, bcc_id)
        log.info("notifications and bcc published", extra={"message_id": action.message_id,
                                                           "notifications": len(action.notifications),
                                                           "bcc": len(action.bcc)})

    def _warning_due(self, action: MailAction, first: datetime, now: datetime) -> bool:
        return (self.dsn is not None and self.delay_warning_s > 0 and bool(action.mail_from)
                and (now - first).total_seconds() >= self.delay_warning_s)

    async def _bounce(self, action: MailAction, raw: bytes, reports: list[RecipientReport], dsn_id: str,
                      now: datetime) -> None:
        extra = {"message_id": action.message_id, "recipients": [r.recipient for r in reports],
                 "reasons": [r.diagnostic for r in reports], "mail_from": action.mail_from}
        if not action.mail_from:
            log.warning("bounced; null sender, so no DSN", extra=extra)
        elif self.dsn is None:
            log.warning("bounced; DSNs are off", extra=extra)
        else:
            log.warning("bounced; DSN to the sender", extra={**extra, "dsn_id": dsn_id})
            await self._send_dsn(action, raw, reports, dsn_id, now)

    async def _send_dsn(self, action: MailAction, raw: bytes, reports: list[RecipientReport], dsn_id: str,
                        now: datetime) -> None:
        """Publish the DSN as an action from the null sender to the original sender (delivered like any mail)."""
        assert self.dsn is not None and action.mail_from
        try:
            message = self.dsn.build(action, raw, reports, now, dsn_id)
        except Exception:  # a DSN that cannot be built must not fail the delivery it reports on
            log.exception("cannot build the DSN", extra={"message_id": action.message_id, "dsn_id": dsn_id})
            return
        frame = frames.pack(dsn_action(action, dsn_id, now), message)
        await self.publish(frame, topics.MAIL_ACTIONS, dsn_id)
