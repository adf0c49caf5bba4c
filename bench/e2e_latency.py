"""End-to-end latency: SMTP DATA accepted -> message in the downstream sink, on the real local stack.

Starts the whole gateway on free ports (Tansu, Redis, clamd, every service, an SMTP sink), sends N ham
messages one after the other as an internet client, and prints the median and p90 of the time from the
250 answer to the file appearing in the sink's Maildir, plus the SMTP answer time.

    .venv/bin/python bench/e2e_latency.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mailgw_devstack.stack import Stack, StackPorts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.mail import delivered, ham, send, token


async def one(stack: Stack) -> tuple[float, float]:
    marker = token()
    started = time.perf_counter()
    code, _ = await send(stack.ports.smtp, ham(f"bench {marker}"))
    answered = time.perf_counter()
    assert code == 250
    while not delivered(stack.delivered_dir, marker):
        await asyncio.sleep(0.005)
        if time.perf_counter() - started > 120:
            raise TimeoutError("message not delivered in 120 s")
    return answered - started, time.perf_counter() - answered


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-") as state:
        stack = Stack(state=Path(state), ports=StackPorts.free())
        t0 = time.perf_counter()
        stack.start()
        print(f"stack started in {time.perf_counter() - t0:.1f} s")
        try:
            asyncio.run(one(stack))  # warm-up: first message pays connection set-up everywhere
            results = [asyncio.run(one(stack)) for _ in range(count)]
        finally:
            stack.stop()
    smtp = sorted(r[0] * 1000 for r in results)
    e2e = sorted((r[0] + r[1]) * 1000 for r in results)
    print(f"messages: {count}")
    print(f"SMTP DATA answer (queued, acks=all): median {statistics.median(smtp):.1f} ms, "
          f"p90 {smtp[int(0.9 * (count - 1))]:.1f} ms")
    print(f"end to end (connect -> in downstream Maildir): median {statistics.median(e2e):.1f} ms, "
          f"p90 {e2e[int(0.9 * (count - 1))]:.1f} ms, max {e2e[-1]:.1f} ms")


if __name__ == "__main__":
    main()
