"""The delivery service as a real process (python -m mailgw_delivery) against a sink that counts arrivals
by Message-ID: used by the restart test and by bench/delivery_*.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from mailgw_devstack.infra import Managed, free_port, spawn
from mailgw_libs import frames, topics

from .support import Sink, SinkHandler, action, decision

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.IGNORECASE | re.MULTILINE)


def numbered_message(tag: str, index: int, body_lines: int = 40) -> bytes:
    body = b"".join(b"line %d of a message body for the delivery benchmark\r\n" % i for i in range(body_lines))
    return (f"From: bench@example.org\r\nTo: rcpt@example.com\r\nSubject: bench {index}\r\n"
            f"Message-ID: <{tag}-{index}@bench.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode() + body


class CountingSink:
    """An SMTP sink on a fixed port that can go down and come back; counts arrivals per Message-ID."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.sink: Sink | None = None

    def start(self) -> None:
        if self.sink is None:
            self.sink = Sink(self.handler, self.port).start()

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None

    def counts(self) -> Counter[str]:
        with self.handler.lock:
            contents = [r.content for r in self.handler.received]
        found: Counter[str] = Counter()
        for content in contents:
            match = _MESSAGE_ID.search(content)
            found[match.group(1).decode() if match else "?"] += 1
        return found


class DeliveryProcess:
    """`python -m mailgw_delivery` with its settings in the environment; stop (SIGTERM), kill, start again."""

    def __init__(self, kafka: str, redis_url: str, relay_port: int, prefix: str, log: Path,
                 extra: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.log = log
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONUNBUFFERED": "1", "MAILGW_LOG_LEVEL": "warning",
            "MAILGW_KAFKA_BOOTSTRAP": kafka, "MAILGW_REDIS_URL": redis_url,
            "MAILGW_DELIVERY_HTTP_PORT": str(self.http_port), "MAILGW_DELIVERY_HELO_NAME": "delivery.test",
            "MAILGW_DELIVERY_RELAY_HOST": "127.0.0.1", "MAILGW_DELIVERY_RELAY_PORT": str(relay_port),
            "MAILGW_DELIVERY_SMARTHOST": json.dumps({"host": "127.0.0.1", "port": relay_port}),
            "MAILGW_DELIVERY_CONNECT_TIMEOUT_S": "2", "MAILGW_DELIVERY_COMMAND_TIMEOUT_S": "10",
            "MAILGW_DELIVERY_RETRY_DELAYS_S": "[1, 2]", "MAILGW_DELIVERY_LEDGER_PREFIX": f"{prefix}:sent:",
        })
        self.env.update(extra or {})
        self.managed: Managed | None = None
        self.starts = 0

    def start(self) -> None:
        proc = spawn("delivery", [sys.executable, "-m", "mailgw_delivery"], self.log, env=self.env)
        self.managed = Managed("delivery", self.http_port, self.log, proc=proc)
        self.starts += 1

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.managed is not None and self.managed.alive(), f"delivery exited; see {self.log}"
                try:
                    if (await client.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1.0)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"delivery not ready in {timeout_s:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop(timeout=30.0)
            self.managed = None

    def kill(self) -> None:
        if self.managed is not None:
            self.managed.kill()
            self.managed = None


async def publish_actions(kafka: str, tag: str, count: int, recipients: int = 1) -> list[str]:
    """`count` actions (each a distinct Message-ID) on mail.actions; returns the Message-IDs."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5, max_request_size=8 * 1024 * 1024)
    await producer.start()
    ids: list[str] = []
    try:
        futures = []
        for i in range(count):
            act = action(*(decision(f"user{i}-{r}@example.com") for r in range(recipients)))
            futures.append(await producer.send(topics.MAIL_ACTIONS, frames.pack(act, numbered_message(tag, i)),
                                               key=act.message_id.encode()))
            ids.append(f"{tag}-{i}@bench.test")
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids


async def wait_for(predicate: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False
