"""When a deferred delivery is tried again, and on which retry topic it waits.

Attempt 1 is the delivery of the action itself. After attempt n is deferred, the next one
waits `delays[n-1]` seconds (the last delay repeats) on the topic `mail.retry.<delay>s`.
Every record of one retry topic waits the same delay, so each partition is ordered by due
time and its head is always the next one due. A message still deferred `lifetime_s` after
its first attempt is not retried any more: it bounces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailgw_libs import topics

LIFETIME_EXCEEDED = "queue lifetime exceeded"


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


def wait_before_retry(not_before: datetime, now: datetime, max_wait_s: float) -> tuple[float, bool]:
    """(seconds to sleep now, whether the record is due after that sleep).

    A record due within `max_wait_s` is slept on and then delivered; a later one is slept on
    for `max_wait_s` and then fetched again, so its consumer never stalls for long.
    """
    remaining = (not_before - now).total_seconds()
    if remaining <= 0:
        return 0.0, True
    if remaining <= max_wait_s:
        return remaining, True
    return max_wait_s, False
