"""The downstream sink goes down for a while and comes back: is every message delivered exactly once?

Starts Tansu, Redis, an aiosmtpd sink and `python -m mailgw_delivery` (retry delays 2 s and 5 s), publishes
N actions, stops the sink once a third has arrived, keeps it down DOWN_S seconds (deliveries are deferred to
the retry topics meanwhile), starts it again on the same port and waits until every message has arrived.
With --kill the delivery process is also killed (SIGKILL) while the sink is down and started again; with
DOWN_S 0 and --kill the sink stays up and the process is killed in the middle of the batch.
Prints sent, received, duplicates and lost.

    .venv/bin/python bench/delivery_outage.py [N] [DOWN_S] [--kill]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mailgw_devstack.infra import start_redis, start_tansu, stop_all
from services.delivery.tests.harness import CountingSink, DeliveryProcess, publish_actions, wait_for


async def run(state: Path, count: int, down_s: float, kill: bool) -> None:
    kafka, redis = start_tansu(state / "kafka"), start_redis(state / "redis")
    sink = CountingSink()
    sink.start()
    bootstrap = f"127.0.0.1:{kafka.port}"
    service = DeliveryProcess(bootstrap, f"redis://127.0.0.1:{redis.port}/0", sink.port, "bench",
                              state / "delivery.log", extra={"MAILGW_DELIVERY_RETRY_DELAYS_S": "[2, 5]"})
    try:
        service.start()
        await service.wait_ready()
        started = time.perf_counter()
        ids = await publish_actions(bootstrap, "outage", count)
        await wait_for(lambda: sum(sink.counts().values()) >= count // 3, 300)
        before = sum(sink.counts().values())
        if down_s > 0:
            sink.stop()
            print(f"sink down after {before} arrivals, for {down_s:.0f} s")
        if kill:
            await asyncio.sleep(down_s / 2)
            service.kill()
            print(f"delivery killed (SIGKILL) after {sum(sink.counts().values())} arrivals; started again")
            service.start()
        await asyncio.sleep(down_s / 2 if kill else down_s)
        if down_s > 0:
            sink.start()
            print("sink up again")
        done = await wait_for(lambda: set(ids) <= set(sink.counts()), 600)
        await asyncio.sleep(5.0)  # anything sent twice arrives by now
        elapsed = time.perf_counter() - started
    finally:
        service.stop()
        sink.stop()
        stop_all([kafka, redis])
    counts = sink.counts()
    received = sum(counts[i] for i in ids)
    duplicates = sum(counts[i] - 1 for i in ids if counts[i] > 1)
    lost = sum(1 for i in ids if not counts[i])
    print(f"sent {count}, received {received} ({len([i for i in ids if counts[i]])} distinct), "
          f"duplicates {duplicates}, lost {lost}; all delivered: {done}; {elapsed:.1f} s in all")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 1000
    down_s = float(args[1]) if len(args) > 1 else 20.0
    with tempfile.TemporaryDirectory(prefix="mailgw-bench-") as state:
        asyncio.run(run(Path(state), count, down_s, "--kill" in sys.argv))


if __name__ == "__main__":
    main()
