"""Messages per second through the antivirus service's scanner (layer 1 clamd on the whole message and its
decoded parts, through the connection pool, with layer 2 beside it: what `app.handle` runs per message, without
Kafka and without the cache) on the dev corpus, against a clamd of its own with the project's signatures.

    .venv/bin/python bench/antivirus/throughput.py [--concurrency 4] [--limit 3000] [--parts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from mailgw_antivirus.app import make_policy
from mailgw_antivirus.scanner import ClamdScanner
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import start_clamd

CORPUS = Path("/work/shared/corpus/dev")


async def run(messages: list[bytes], concurrency: int, max_parts: int, port: int) -> None:
    settings = AntivirusSettings()
    policy = make_policy(settings)
    scanner = ClamdScanner("127.0.0.1", port, 30.0, max_connections=settings.clamd_max_connections,
                           max_parts=max_parts)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in messages:
        queue.put_nowait(raw)
    latencies: list[float] = []
    failed = viruses = 0

    async def worker() -> None:
        nonlocal failed, viruses
        while not queue.empty():
            raw = queue.get_nowait()
            started = time.perf_counter()
            result, _ = await asyncio.gather(scanner.scan_message(raw), policy.scan_async(raw))
            latencies.append(time.perf_counter() - started)
            failed += result.failed
            viruses += bool(result.viruses)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await scanner.close()
    latencies.sort()
    print(f"{len(messages)} messages ({sum(map(len, messages)) / 1e6:.1f} MB), {concurrency} in flight, "
          f"parts scanned separately: {max_parts or 'no'}")
    print(f"  {len(messages) / elapsed:.0f} messages/s; latency median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p95 {latencies[int(len(latencies) * 0.95)] * 1000:.1f} ms; failed {failed}, with a virus {viruses}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--parts", type=int, default=50)
    args = parser.parse_args()
    files = sorted(CORPUS.glob("*/*.eml"))[: args.limit]
    messages = [p.read_bytes() for p in files]
    with tempfile.TemporaryDirectory(prefix="avt") as state:
        clamd = start_clamd(Path(state))
        try:
            asyncio.run(run(messages, args.concurrency, args.parts, clamd.port))
            asyncio.run(run(messages, args.concurrency, 0, clamd.port))
        finally:
            clamd.stop()


if __name__ == "__main__":
    main()
