"""`ConfigFollower`: a service's view of the current configuration, kept up to date live.

`catch_up()` reads `mailgw.config` to its end before the service may serve (an empty topic means the
shipped defaults); `follow()` then applies each newly accepted version and calls the callbacks with it.
An invalid record is logged and ignored by the fold: the previous configuration stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from ..settings import ServiceSettings
from .model import GatewayConfig, shipped_defaults
from .store import PARTITION, ensure_config_topic, make_consumer, read_to_end
from .versions import Accepted, VersionLog

log = logging.getLogger("mailgw.config")

ConfigCallback = Callable[[GatewayConfig], Awaitable[None]]

CONFIG_VERSION = Gauge("mailgw_config_version", "Configuration version in force (0 = shipped defaults)")
CONFIG_CHANGES = Counter("mailgw_config_changes_total", "Configuration versions applied live")
CONFIG_CALLBACK_ERRORS = Counter("mailgw_config_callback_errors_total", "Configuration callbacks that raised")


class ConfigFollower:
    def __init__(self, settings: ServiceSettings, defaults: GatewayConfig | None = None) -> None:
        self.settings = settings
        self.versions = VersionLog()
        self._defaults = defaults
        self.callbacks: list[ConfigCallback] = []
        self.caught_up = False
        self.applied_at: float | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._last_offset = -1

    @property
    def version(self) -> int:
        return self.versions.version

    @property
    def config(self) -> GatewayConfig:
        if self.versions.current_config is not None:
            return self.versions.current_config
        if self._defaults is None:
            self._defaults = shipped_defaults()
        return self._defaults

    def on_change(self, callback: ConfigCallback) -> None:
        self.callbacks.append(callback)

    async def catch_up(self) -> None:
        """Read the topic to its end (the current version as of now); retried by the caller while Kafka is down."""
        await ensure_config_topic(self.settings)
        # A retried catch-up starts over: fold from the beginning into a fresh log.
        self.versions = VersionLog()
        consumer = make_consumer(self.settings)
        await consumer.start()
        try:
            consumer.assign([PARTITION])
            await consumer.seek_to_beginning(PARTITION)
            await read_to_end(consumer, self.versions)
            self._last_offset = (await consumer.position(PARTITION)) - 1
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self.caught_up = True
        CONFIG_VERSION.set(self.version)
        log.info("configuration loaded", extra={"version": self.version,
                                                "sha256": self.versions.current.record.sha256
                                                if self.versions.current else "shipped defaults"})

    async def notify(self, config: GatewayConfig) -> None:
        """Call every callback; one that fails is logged and does not keep the others from the change."""
        for callback in self.callbacks:
            try:
                await callback(config)
            except Exception:
                CONFIG_CALLBACK_ERRORS.inc()
                log.exception("configuration callback failed", extra={"version": self.version})

    async def follow(self) -> None:
        """Apply new versions as they are published, for the life of the process (after `catch_up`)."""
        assert self._consumer is not None, "catch_up() first"
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(PARTITION, timeout_ms=1000)
                if not batches:
                    await self._check_log_end(consumer)
            except (KafkaError, OSError) as exc:
                # The consumer reconnects by itself; its position is kept, so nothing is skipped.
                log.warning("reading configuration failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
                continue
            for record in batches.get(PARTITION, []):
                if record.offset <= self._last_offset:
                    self._log_was_reset(record.offset)
                self._last_offset = record.offset
                accepted = self.versions.add(record.offset, record.key, record.value)
                if accepted is not None:
                    await self._applied(accepted)

    async def _check_log_end(self, consumer: AIOKafkaConsumer) -> None:
        """A log that ends before our position was recreated: read the new one from its beginning (some brokers
        answer such a fetch with nothing instead of an out-of-range error)."""
        end = (await consumer.end_offsets([PARTITION]))[PARTITION]
        if end < await consumer.position(PARTITION):
            await consumer.seek_to_beginning(PARTITION)

    def _log_was_reset(self, offset: int) -> None:
        """Offsets went back: the topic was recreated (a broker without persistent storage restarted). The fold
        starts over on the new log; the configuration in force stays until the new log brings a valid version."""
        log.warning("configuration topic was reset, following the new log",
                    extra={"offset": offset, "last_offset": self._last_offset, "version": self.version})
        self._defaults = self.config
        self.versions = VersionLog()

    async def _applied(self, accepted: Accepted) -> None:
        self.applied_at = time.monotonic()
        CONFIG_VERSION.set(accepted.record.version)
        CONFIG_CHANGES.inc()
        log.info("configuration changed", extra={"version": accepted.record.version, "author": accepted.record.author,
                                                 "sha256": accepted.record.sha256})
        await self.notify(self.config)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
