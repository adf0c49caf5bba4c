"""Before-queue mode: hold the SMTP transaction after DATA until the rules service has decided.

`ActionWaiter` reads `mail.actions` without a consumer group (every partition assigned by hand, from the end
offsets at start): each ingress process must see every action, and on Tansu a group join costs seconds and
stalls when a process has two members. A waiter registers the message id *before* mail.received is published,
so an action that comes back faster than the publish acknowledgement is not missed.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mailgw_libs import frames, topics
from mailgw_libs.events import Fate, MailAction

log = logging.getLogger("mailgw.ingress.beforequeue")


def all_blocked(action: MailAction) -> bool:
    """True when the rules refused the message for every recipient (answer 550 instead of queueing)."""
    return bool(action.decisions) and all(d.fate is Fate.BLOCK and not d.tempfail for d in action.decisions)


class ActionWaiter:
    def __init__(self, bootstrap: str, fetch_max_wait_ms: int = 50, topic: str = topics.MAIL_ACTIONS) -> None:
        self.bootstrap = bootstrap
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.topic = topic
        self.waiting: dict[str, asyncio.Future[MailAction]] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    fetch_max_wait_ms=self.fetch_max_wait_ms, auto_offset_reset="latest")
        await consumer.start()
        try:
            await consumer.topics()  # fetches the metadata: partitions_for_topic needs it
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                raise KafkaError(f"topic {self.topic} has no partitions yet")
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer
        self.ready.set()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        for future in self.waiting.values():
            future.cancel()
        self.waiting.clear()

    def expect(self, message_id: str) -> asyncio.Future[MailAction]:
        future: asyncio.Future[MailAction] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = future
        return future

    def forget(self, message_id: str) -> None:
        future = self.waiting.pop(message_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def wait(self, message_id: str, future: asyncio.Future[MailAction], deadline_s: float) -> MailAction | None:
        """The action of `message_id`, or None when none came within `deadline_s`."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline_s)
        except TimeoutError:
            return None
        finally:
            self.forget(message_id)

    async def run(self) -> None:
        """Start (retrying while Kafka is not there), then resolve the futures of the actions that arrive.

        Any failure only means answers fall back to after-queue at the deadline: it is logged and retried,
        never allowed to end the reader."""
        delay = 0.5
        while self.consumer is None:
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - Kafka not there yet, topic being created, ...
                log.warning("mail.actions not readable yet", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        log.info("reading mail.actions for before-queue answers")
        consumer = self.consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("mail.actions read failed", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    self._deliver(record.key, record.value)

    def _deliver(self, key: bytes | None, value: bytes | None) -> None:
        message_id = (key or b"").decode("utf-8", "replace")
        future = self.waiting.get(message_id)
        if future is None or future.done() or value is None:
            return
        try:
            action = frames.unpack_header(value, MailAction)
        except Exception as exc:  # noqa: BLE001 - a damaged action must not stop the reader: the deadline answers
            log.warning("unreadable action", extra={"message_id": message_id, "error": repr(exc)})
            return
        if action.release_id:
            return  # a quarantine release, not the first decision
        future.set_result(action)
