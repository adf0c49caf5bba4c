"""Decides a joined message once: claim, evaluate the rule system, publish the action, mark done."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram

from mailgw_libs import frames
from mailgw_libs.events import MailAction, MailReceived

from .engine import FailurePolicy, RuleEngine
from .join import VerdictJoin
from .matching import DirectoryLookupFailed

log = logging.getLogger("mailgw.rules.decider")
tracer = trace.get_tracer("mailgw.rules")

DECISIONS = Counter("mailgw_rules_decisions_total", "Messages decided", ["fate", "complete"])
JOIN_SECONDS = Histogram("mailgw_rules_join_seconds", "Time from reception to decision")

ActionPublisher = Callable[[MailAction, bytes], Awaitable[None]]


class Decider:
    def __init__(self, join: VerdictJoin, engine: RuleEngine, failure_policy: dict[str, FailurePolicy],
                 publish: ActionPublisher, max_raw_bytes: int) -> None:
        self.join = join
        # Replaced as a whole when the configuration changes (a decision uses one engine throughout).
        self.engine = engine
        self.failure_policy = failure_policy
        self.publish = publish
        self.max_raw_bytes = max_raw_bytes

    async def decide_if_complete(self, message_id: str) -> bool:
        joined = await self.join.load(message_id)
        if not self.join.is_complete(joined):
            return False
        try:
            return await self.decide(message_id)
        except DirectoryLookupFailed as exc:
            # Not the event's fault: keep the message joined; the deadline sweeper retries it.
            log.warning("directory unavailable, decision postponed", extra={"message_id": message_id,
                                                                              "error": str(exc)})
            return False

    async def decide(self, message_id: str) -> bool:
        """Decide now with what is there; False when another worker holds it or it is done already."""
        if not await self.join.claim(message_id):
            return False
        try:
            joined = await self.join.load(message_id)
            if joined.received_frame is None:
                # Verdicts without the message: nothing to deliver. Keep waiting for mail.received.
                await self.join.drop_deadline(message_id)
                await self.join.release(message_id)
                return False
            envelope, raw = frames.unpack(joined.received_frame, MailReceived, self.max_raw_bytes)
            action = await self.engine.decide(envelope, raw, joined.verdicts, self.join.scorers, self.failure_policy)
            # The decision belongs to the message's trace, also when the deadline sweeper makes it.
            parent = propagate.extract({"traceparent": joined.traceparent}) if joined.traceparent else None
            with tracer.start_as_current_span("rules.decide", context=parent) as span:
                span.set_attribute("mailgw.message_id", message_id)
                span.set_attribute("mailgw.missing_scorers", ",".join(action.missing_scorers))
                await self.publish(action, raw)
        except BaseException:
            await self.join.release(message_id)
            raise
        await self.join.finish(message_id)
        fate = action.decisions[0].fate if action.decisions else "none"
        DECISIONS.labels(str(fate), "yes" if not action.missing_scorers else "no").inc()
        JOIN_SECONDS.observe(max(0.0, time.time() - envelope.received_at.timestamp()))
        log.info("decided", extra={"message_id": message_id, "fate": str(fate), "score": action.score,
                                    "missing": action.missing_scorers})
        return True
