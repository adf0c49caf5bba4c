"""Antispam start time: building the rule engine (parse + translate + Hyperscan) with the compiled-database
cache on disk cold (compile and write) and warm (load), each in a fresh process.

    .venv/bin/python bench/antispam_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import sys, time
started = time.perf_counter()
from mailgw_antispam.rules import load_engine
engine = load_engine(cache_dir=sys.argv[1])
print(time.perf_counter() - started, engine.from_cache, len(engine.ruleset.rules))
"""


def start(cache_dir: str) -> tuple[float, bool, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, cache_dir], check=True, capture_output=True, text=True)
    seconds, cached, rules = out.stdout.split()
    return float(seconds), cached == "True", int(rules)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            seconds, cached, rules = start(cache)
            assert not cached
            cold.append(seconds)
            seconds, cached, _ = start(cache)
            assert cached
            warm.append(seconds)
    print(f"{rules} rules; engine start (imports + rules + hyperscan), median of {args.runs} fresh processes:")
    print(f"  no cache (compile): {statistics.median(cold):.2f} s")
    print(f"  cache on disk     : {statistics.median(warm):.2f} s")


if __name__ == "__main__":
    main()
