"""When a deferred delivery is tried again, on which retry topic it waits, and how it waits.

Attempt 1 is the delivery of the action itself. After attempt n is deferred, the next one
waits `delays[n-1]` seconds (the last delay repeats) on the topic `mail.retry.<delay>s`.
Every record of one retry topic waits the same delay, so each partition is ordered by due
time and its head is always the next one due. A message still deferred `lifetime_s` after
its first attempt is not retried any more: it bounces.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from faststream.kafka.message import KafkaMessage
from prometheus_client import Counter

from mailgw_libs import topics

LIFETIME_EXCEEDED = "queue lifetime exceeded"

HOLDS = Counter("mailgw_delivery_retry_holds_total",
                "Retry records fetched before they were due, by how their partition waited", ["how"])


@dataclass(frozen=True)
class RetryStep:
    attempt: int  # the attempt being scheduled
    delay_s: int
    topic: str
    not_before: datetime


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[int, ...]
    lifetime_s: int

    def __post_init__(self) -> None:
        if not self.delays_s or any(d <= 0 for d in self.delays_s):
            raise ValueError("a retry schedule needs at least one positive delay")

    @classmethod
    def of(cls, delays_s: Sequence[int], lifetime_s: int) -> RetrySchedule:
        return cls(tuple(delays_s), lifetime_s)

    def delay_after(self, attempt: int) -> int:
        """Seconds to wait after attempt `attempt` (1-based) was deferred."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        return self.delays_s[min(attempt, len(self.delays_s)) - 1]

    @property
    def distinct_delays(self) -> tuple[int, ...]:
        """The delays in schedule order, each once: one retry topic per delay."""
        return tuple(dict.fromkeys(self.delays_s))

    @property
    def topics(self) -> list[str]:
        return [topics.retry_topic(d) for d in self.distinct_delays]

    def expired(self, first_attempt_at: datetime, now: datetime) -> bool:
        return (now - first_attempt_at).total_seconds() >= self.lifetime_s

    def next_step(self, attempt: int, first_attempt_at: datetime, now: datetime) -> RetryStep | None:
        """The retry after a deferral of attempt `attempt`; None when the queue lifetime is over."""
        if self.expired(first_attempt_at, now):
            return None
        delay = self.delay_after(attempt)
        return RetryStep(attempt + 1, delay, topics.retry_topic(delay), now + timedelta(seconds=delay))


def hold_for(not_before: datetime, now: datetime, max_hold_s: float) -> float:
    """How long to hold a retry partition whose head is due at `not_before` (0: it is due now).

    The hold is capped at `max_hold_s`: the head is then fetched and checked again, which
    bounds the effect of a wrong clock or an absurd `not_before`.
    """
    remaining = (not_before - now).total_seconds()
    if remaining <= 0:
        return 0.0
    return min(remaining, max_hold_s)


class PartitionHold:
    """Holds a retry partition whose head is not due yet, without blocking the consumer.

    The record is rewound with `msg.nack()` (FastStream seeks the partition back to it, and
    nothing is committed past it), the partition is paused in the consumer, and a timer resumes
    it when the head falls due. Meanwhile the same consumer keeps serving its other partitions
    (mail.actions and the other retry topics), and it keeps polling, so max_poll_interval is
    never exceeded. All records of one retry topic wait the same delay, so nothing behind the
    head can be due before it. If the partition is revoked meanwhile, its new owner fetches the
    head again and holds it in turn.
    """

    def __init__(self, fallback_sleep_s: float = 1.0) -> None:
        self.fallback_sleep_s = fallback_sleep_s
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def held(self) -> int:
        return len(self._timers)

    async def hold(self, msg: KafkaMessage, seconds: float) -> None:
        record = msg.raw_message
        consumer = getattr(msg, "consumer", None)
        await msg.nack()
        if not isinstance(consumer, AIOKafkaConsumer) or isinstance(record, tuple):
            # No consumer to pause (not expected with FastStream's Kafka subscriber): a short
            # sleep keeps the redelivery loop slow, and the record is fetched again after it.
            HOLDS.labels("sleep").inc()
            await asyncio.sleep(min(seconds, self.fallback_sleep_s))
            return
        partition = TopicPartition(record.topic, record.partition)
        try:
            consumer.pause(partition)
        except IllegalStateError:  # revoked meanwhile: the new owner checks the head again
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def resume() -> None:
            if handle is not None:
                self._timers.discard(handle)
            # Revoked or stopped meanwhile: nothing to resume. (aiokafka asserts when unsubscribed.)
            with contextlib.suppress(IllegalStateError, AssertionError):
                consumer.resume(partition)

        handle = loop.call_later(seconds, resume)
        self._timers.add(handle)
        HOLDS.labels("pause").inc()

    def cancel(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
