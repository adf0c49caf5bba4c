"""Reading and publishing configuration versions on `mailgw.config` (one partition, compacted).

Readers use a consumer without a group: the partition is assigned, read from the beginning to the end
offset taken at start. No group join (seconds on Tansu), no committed offsets: every reader folds the
whole log itself, which is what makes every replica agree on the current version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from .. import bus, topics
from ..settings import ServiceSettings
from .document import MAX_DOCUMENT_BYTES, ConfigError
from .model import GatewayConfig
from .versions import Accepted, VersionLog, new_version

log = logging.getLogger("mailgw.config")

PARTITION = TopicPartition(topics.MAILGW_CONFIG, 0)
# A version record holds a whole document: room for the largest accepted document plus its metadata.
MAX_RECORD_BYTES = MAX_DOCUMENT_BYTES * 2


class ConfigConflict(ConfigError):
    """The current version changed between reading it and publishing the next one."""


def config_topic_spec() -> topics.TopicSpec:
    return next(spec for spec in topics.all_topics() if spec.name == topics.MAILGW_CONFIG)


async def ensure_config_topic(settings: ServiceSettings) -> None:
    await bus.ensure_topics(settings, [config_topic_spec()])


def make_consumer(settings: ServiceSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=MAX_RECORD_BYTES * 2,
        request_timeout_ms=40_000,
    )


async def read_to_end(consumer: AIOKafkaConsumer, into: VersionLog) -> None:
    """Fold every record from the consumer's position up to the end offset as of now."""
    end = (await consumer.end_offsets([PARTITION]))[PARTITION]
    while await consumer.position(PARTITION) < end:
        batches = await consumer.getmany(PARTITION, timeout_ms=1000)
        for record in batches.get(PARTITION, []):
            into.add(record.offset, record.key, record.value)


@asynccontextmanager
async def assigned_consumer(settings: ServiceSettings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer on the config partition, positioned at its beginning."""
    consumer = make_consumer(settings)
    await consumer.start()
    try:
        consumer.assign([PARTITION])
        await consumer.seek_to_beginning(PARTITION)
        yield consumer
    finally:
        await consumer.stop()


class ConfigStore:
    """The administrator's side: read the history, publish a new version (used by `mailgw config`)."""

    def __init__(self, settings: ServiceSettings, timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    async def read(self) -> VersionLog:
        """Every accepted version, in order, and the current one."""
        await ensure_config_topic(self.settings)
        versions = VersionLog(keep_history=True)
        async with assigned_consumer(self.settings) as consumer:
            await asyncio.wait_for(read_to_end(consumer, versions), timeout=self.timeout_s)
        return versions

    async def publish(self, config: GatewayConfig, expected_version: int, author: str, comment: str,
                      rollback_of: int | None = None) -> Accepted:
        """Publish `config` as version `expected_version + 1`; ConfigConflict if another version came first.

        The check before publishing refuses early; the fold after publishing is the authority (a writer
        that raced past the check is ignored by every reader, and learns it here).
        """
        current = await self.read()
        if current.sequence != expected_version:
            raise ConfigConflict(f"the current version is {current.sequence}, not {expected_version}: "
                                 "it changed since the diff was shown; review the new diff and apply again")
        record = new_version(config, expected_version + 1, author, comment, rollback_of)
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                    max_request_size=MAX_RECORD_BYTES, request_timeout_ms=int(self.timeout_s * 1000))
        await producer.start()
        try:
            metadata = await asyncio.wait_for(
                producer.send_and_wait(topics.MAILGW_CONFIG, record.model_dump_json().encode(),
                                       key=record.key.encode(), partition=PARTITION.partition),
                timeout=self.timeout_s)
        finally:
            await producer.stop()
        after = await self.read()
        accepted = after.find(record.version)
        if accepted is None or accepted.record.writer_id != record.writer_id:
            reason = next((r for o, _k, r in after.ignored if o == metadata.offset), "another version was published first")
            raise ConfigConflict(f"version {record.version} was not accepted: {reason}")
        log.info("configuration version published",
                 extra={"version": record.version, "author": author, "sha256": record.sha256, "offset": metadata.offset})
        return accepted

    async def prune(self, keep: int) -> list[Accepted]:
        """Tombstone every version older than the newest `keep` (compaction then removes them); the pruned ones."""
        versions = await self.read()
        pruned, keys = versions.prunable(keep)
        if not keys:
            return []
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                    request_timeout_ms=int(self.timeout_s * 1000))
        await producer.start()
        try:
            for key in keys:
                await asyncio.wait_for(producer.send_and_wait(topics.MAILGW_CONFIG, None, key=key,
                                                              partition=PARTITION.partition), timeout=self.timeout_s)
        finally:
            await producer.stop()
        log.info("configuration versions pruned", extra={"versions": [a.record.version for a in pruned],
                                                         "tombstones": len(keys)})
        return pruned
