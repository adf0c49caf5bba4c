"""SMTP transactions per second that one ingress process accepts, with greylisting on (real Redis).

The server runs in a process of its own (IngressHandler + aiosmtpd, the production code path) with a
publisher that acknowledges at once: this measures the SMTP dialogue and the pre-queue policy, not Kafka
(see bench/e2e_latency.py for the whole pipeline). Clients are internet clients (127.0.0.2-127.0.0.9,
not trusted), one transaction per connection. Greylisting: every triplet is greylisted once in a warm-up
(delay 0 here), so the measured transactions take the whitelisted path: a Redis MGET + SET per recipient.

    .venv/bin/python bench/ingress_smtp_load.py --seconds 10 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

import aiosmtplib

from mailgw_devstack.infra import free_port, start_redis, wait_port
from mailgw_ingress.greylist import GreylistPolicy
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, start_smtp_server
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.failfast import make_redis

MESSAGE = b"Subject: load\r\nFrom: a@sender.test\r\n\r\n" + b"x" * 2000 + b"\r\n"
SENDERS = 50


def serve(port: int, redis_url: str, greylisting: bool) -> None:
    async def main() -> None:
        async def publish(_event: MailReceived, _raw: bytes) -> None:
            return None

        def on_event(_event: SmtpEvent) -> None:
            return None

        greylist = GreylistPolicy(make_redis(redis_url, 0.5), "bench:", delay_s=0.0) if greylisting else None
        handler = IngressHandler(RelayPolicy(["example.com"], ["127.0.0.1/32"]), publish, on_event, "mx.bench",
                                 max_recipients=100, max_message_bytes=10 * 1024 * 1024, greylist=greylist,
                                 max_connections_per_ip=1000)
        await start_smtp_server(handler, "127.0.0.1", port, 10 * 1024 * 1024, 65536, 60)
        await asyncio.Event().wait()

    asyncio.run(main())


async def transaction(port: int, n: int) -> bool:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(f"127.0.0.{2 + n % 8}", 0),
                           start_tls=False, local_hostname="load.test", timeout=30)
    await smtp.connect()
    try:
        await smtp.ehlo()
        refused, _ = await smtp.sendmail(f"s{n % SENDERS}@sender.test", ["user@example.com"], MESSAGE)
        return refused == {}
    except aiosmtplib.SMTPException:
        return False
    finally:
        await smtp.quit()


async def load(port: int, seconds: float, concurrency: int) -> None:
    # Warm-up: each triplet (8 client /24s are one /24 here) is greylisted once, then whitelisted.
    for n in range(SENDERS):
        await transaction(port, n)
    done = failed = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done, failed
        n = w
        while time.monotonic() < deadline:
            if await transaction(port, n):
                done += 1
            else:
                failed += 1
            n += concurrency

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - started
    print(f"{done} transactions accepted in {elapsed:.1f}s = {done / elapsed:.0f}/s "
          f"({failed} not accepted), concurrency {concurrency}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--no-greylisting", action="store_true")
    args = parser.parse_args()
    redis = start_redis(Path(tempfile.mkdtemp(prefix="smtp-load-")))
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port, f"redis://127.0.0.1:{redis.port}/0",
                                                         not args.no_greylisting), daemon=True)
    server.start()
    try:
        wait_port(port, 15)
        asyncio.run(load(port, args.seconds, args.concurrency))
    finally:
        server.terminate()
        server.join(5)
        redis.stop()


if __name__ == "__main__":
    main()
