"""bench/antispam: accuracy (5-fold cross-validation on the dev corpus) and throughput of our antispam, and the
same folds through Debian's SpamAssassin (spamd) and rspamd, side by side. Offline: network checks off.

    .venv/bin/python bench/antispam/run.py [--corpus DIR] [--skip-sa] [--skip-rspamd] [--sa-folds N]
        [--sa-sample N] [--processes 2] [--details]

Our filter: rules + Bayes (trained on 4 folds, scored on the fifth) at the default threshold 5.
Throughput: all 3,000 messages through `analyse` (parse, rules, tokens) + a Bayes lookup in a real redis-server,
in 1 and in N processes. SpamAssassin and rspamd: trained per fold (sa-learn; rspamc learn_spam/learn_ham),
scanned through spamd (spamc, 2 children) and rspamd's HTTP API (2 workers); their times include their own
process and protocol overhead, as a gateway would see it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds
import ours

from mailgw_devstack.infra import start_redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=folds.DEFAULT_CORPUS)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--skip-sa", action="store_true")
    parser.add_argument("--skip-rspamd", action="store_true")
    parser.add_argument("--other-folds", type=int, default=5, help="folds run through SpamAssassin and rspamd")
    parser.add_argument("--sa-sample", type=int, default=0,
                        help="scan only every Nth test message per fold with SpamAssassin (0: all)")
    parser.add_argument("--details", action="store_true", help="band table and misclassified messages")
    parser.add_argument("--accuracy-only", action="store_true", help="only our cross-validation")
    args = parser.parse_args()

    samples = folds.load(args.corpus)
    print(f"corpus {args.corpus}: {sum(s.label == 'ham' for s in samples)} ham, "
          f"{sum(s.label == 'spam' for s in samples)} spam, 5 folds", flush=True)
    started = time.perf_counter()
    analyses = ours.analyse_all(samples)
    print(f"analysed in {time.perf_counter() - started:.1f} s", flush=True)
    result = ours.cross_validate(samples, analyses)
    results: dict[str, folds.Tally] = {}
    print(result.rules_only.line("mailgw rules only"))
    print(result.tally.line("mailgw rules + Bayes (5-fold CV)"), flush=True)
    if args.details:
        print(ours.band_table(samples, result))
        print("\n".join(ours.missed(samples, result)))
    if args.accuracy_only:
        return

    with tempfile.TemporaryDirectory(prefix="bench-antispam-") as tmp:
        redis = start_redis(Path(tmp) / "redis")
        try:
            url = f"redis://127.0.0.1:{redis.port}/0"
            ours.train_redis(url, "bench", samples, analyses)
            raws = [s.raw for s in samples]
            one, _ = ours.throughput(url, "bench", raws, 1)
            many, _ = ours.throughput(url, "bench", raws, args.processes)
            print(f"mailgw throughput: {one:7.1f} msg/s in 1 process, {many:7.1f} msg/s in {args.processes} "
                  "processes (rules + Bayes lookups in Redis)", flush=True)
            result.tally.seconds, result.tally.scanned = len(raws) / many, len(raws)
            results["mailgw"] = result.tally
            if not args.skip_sa:
                import spamassassin
                results["SpamAssassin"] = spamassassin.run(samples, Path(tmp) / "sa", args.other_folds,
                                                           args.sa_sample)
                print(results["SpamAssassin"].line("SpamAssassin (spamd, 2 children)"), flush=True)
            if not args.skip_rspamd:
                import rspamd
                results["rspamd"] = rspamd.run(samples, Path(tmp) / "rspamd", redis.port, args.other_folds)
                print(results["rspamd"].line("rspamd (HTTP API, 2 workers)"), flush=True)
        finally:
            redis.stop()

    ref = results["mailgw"]
    print("\nside by side (ours / theirs):")
    for name, tally in results.items():
        if name == "mailgw":
            continue
        recall_ratio = ref.recall / tally.recall if tally.recall else float("inf")
        speed_ratio = ref.rate / tally.rate if tally.rate else float("inf")
        print(f"  vs {name:13}: recall {ref.recall:.2f} % / {tally.recall:.2f} % = x{recall_ratio:.2f}; "
              f"ham FP {ref.fp_rate:.2f} % / {tally.fp_rate:.2f} %; "
              f"speed {ref.rate:.0f} / {tally.rate:.1f} msg/s = x{speed_ratio:.1f}")


if __name__ == "__main__":
    main()
