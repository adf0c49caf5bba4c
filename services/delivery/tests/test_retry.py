"""Retry schedule: delays per attempt, topics, queue lifetime, how long a waiting partition is held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailgw_delivery.retry import RetrySchedule, hold_for
from mailgw_delivery.settings import DEFAULT_RETRY_DELAYS_S, DeliverySettings
from mailgw_libs import topics

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def test_delays_follow_the_schedule_and_the_last_one_repeats() -> None:
    schedule = RetrySchedule.of(DEFAULT_RETRY_DELAYS_S, 5 * 86400)
    assert [schedule.delay_after(n) for n in range(1, 9)] == [60, 300, 1800, 7200, 21600, 21600, 21600, 21600]
    with pytest.raises(ValueError):
        schedule.delay_after(0)


def test_next_step_names_the_topic_and_the_due_time() -> None:
    schedule = RetrySchedule.of([60, 300], 3600)
    step = schedule.next_step(1, T0, T0)
    assert step is not None
    assert (step.attempt, step.delay_s, step.topic) == (2, 60, "mail.retry.60s")
    assert step.not_before == T0 + timedelta(seconds=60)
    later = schedule.next_step(4, T0, T0 + timedelta(seconds=1000))
    assert later is not None and (later.attempt, later.topic) == (5, topics.retry_topic(300))


def test_queue_lifetime_ends_the_retries() -> None:
    schedule = RetrySchedule.of([60], 3600)
    assert schedule.next_step(10, T0, T0 + timedelta(seconds=3599)) is not None
    assert schedule.next_step(10, T0, T0 + timedelta(seconds=3600)) is None
    assert schedule.expired(T0, T0 + timedelta(days=1))


def test_one_topic_per_distinct_delay() -> None:
    schedule = RetrySchedule.of([60, 300, 60, 300, 900], 3600)
    assert schedule.distinct_delays == (60, 300, 900)
    assert schedule.topics == ["mail.retry.60s", "mail.retry.300s", "mail.retry.900s"]
    names = {t.name for t in topics.all_topics(schedule.distinct_delays)}
    assert {"mail.retry.60s", "mail.retry.60s.dlq", "mail.actions.dlq", "mail.delivery"} <= names


@pytest.mark.parametrize("delays", [[], [0], [60, -1]])
def test_a_schedule_needs_positive_delays(delays: list[int]) -> None:
    with pytest.raises(ValueError):
        RetrySchedule.of(delays, 60)
    with pytest.raises(ValueError):
        DeliverySettings(retry_delays_s=delays)


def test_hold_until_due_but_never_longer_than_the_cap() -> None:
    assert hold_for(T0, T0, 60) == 0
    assert hold_for(T0 - timedelta(seconds=5), T0, 60) == 0
    assert hold_for(T0 + timedelta(seconds=2.5), T0, 60) == 2.5
    assert hold_for(T0 + timedelta(hours=6), T0, 60) == 60


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_DELIVERY_RETRY_DELAYS_S", "[5, 10]")
    monkeypatch.setenv("MAILGW_DELIVERY_RELAY_PORT", "2500")
    monkeypatch.setenv("MAILGW_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    settings = DeliverySettings()
    assert settings.retry_delays_s == [5, 10] and settings.relay_port == 2500
    assert settings.kafka_bootstrap == "127.0.0.1:1"
    assert settings.queue_lifetime_s == 5 * 86400 and settings.http_port == 9106
    assert settings.connect_timeout_s == 30 and settings.command_timeout_s == 60
