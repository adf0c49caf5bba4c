"""Kafka topic names: defined once here, never as string literals elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

MAIL_RECEIVED = "mail.received"
MAIL_VERDICTS = "mail.verdicts"
MAIL_ACTIONS = "mail.actions"
MAIL_DELIVERY = "mail.delivery"
MAIL_QUARANTINE = "mail.quarantine"
MAIL_LEARN = "mail.learn"
SMTP_EVENTS = "smtp.events"
MAILGW_CONFIG = "mailgw.config"

DLQ_SUFFIX = ".dlq"


def dead_letter(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


def retry_topic(delay_seconds: int) -> str:
    """Retry topic of one delay step, e.g. `mail.retry.300s`."""
    return f"mail.retry.{delay_seconds}s"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 4
    compacted: bool = False


def all_topics(retry_delays: tuple[int, ...] = ()) -> list[TopicSpec]:
    """Every topic the gateway uses, with the dead-letter topics of the consumed ones."""
    main = [
        TopicSpec(MAIL_RECEIVED),
        TopicSpec(MAIL_VERDICTS),
        TopicSpec(MAIL_ACTIONS),
        TopicSpec(MAIL_DELIVERY),
        TopicSpec(MAIL_QUARANTINE),
        TopicSpec(MAIL_LEARN),
        TopicSpec(SMTP_EVENTS),
        TopicSpec(MAILGW_CONFIG, partitions=1, compacted=True),
    ]
    retries = [TopicSpec(retry_topic(d)) for d in retry_delays]
    dlqs = [TopicSpec(dead_letter(t.name), partitions=1) for t in main + retries if not t.compacted]
    return main + retries + dlqs
