"""Rule engine figures on the dev corpus: messages/s of scan() with our rules and with Debian's SpamAssassin
rules, Hyperscan vs re, and spam recall / ham false positives of our rules alone at the threshold.

    .venv/bin/python bench/antispam_rules.py [--corpus ../shared/corpus/dev] [--no-debian] [--top 15]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from mailgw_antispam.rules import DEBIAN_RULES_DIR, Engine, load_ruleset
from mailgw_antispam.scanner import scan

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, engine: Engine, ham: list[bytes], spam: list[bytes], threshold: float,
            top: int) -> None:
    started = time.perf_counter()
    results = [scan(raw, engine=engine) for raw in ham + spam]
    elapsed = time.perf_counter() - started
    scores = [sum(h.score for h in hits) for hits in results]
    ham_scores, spam_scores = scores[: len(ham)], scores[len(ham):]
    fp = sum(s >= threshold for s in ham_scores)
    caught = sum(s >= threshold for s in spam_scores)
    print(f"{name}: {len(results) / elapsed:7.1f} messages/s ({len(results)} in {elapsed:.1f} s); "
          f"spam recall {100 * caught / max(1, len(spam)):.1f} % ({caught}/{len(spam)}), "
          f"ham false positives {100 * fp / max(1, len(ham)):.2f} % ({fp}/{len(ham)}) at {threshold}; "
          f"max ham score {max(ham_scores, default=0):.2f}")
    if top:
        ham_hits = Counter(h.name for hits in results[: len(ham)] for h in hits)
        spam_hits = Counter(h.name for hits in results[len(ham):] for h in hits)
        for rule, count in spam_hits.most_common(top):
            print(f"    {rule:32} spam {count:4}  ham {ham_hits.get(rule, 0):4}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "dev")
    parser.add_argument("--threshold", type=float, default=5.0)
    parser.add_argument("--no-debian", action="store_true")
    parser.add_argument("--no-re", action="store_true", help="skip the re-only runs (slow with Debian's rules)")
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()
    ham = [p.read_bytes() for p in sorted((args.corpus / "ham").glob("*.eml"))]
    spam = [p.read_bytes() for p in sorted((args.corpus / "spam").glob("*.eml"))]
    print(f"corpus: {len(ham)} ham, {len(spam)} spam")
    configs: list[tuple[str, tuple[Path, ...]]] = [("our rules", ())]
    if not args.no_debian and DEBIAN_RULES_DIR.is_dir():
        configs.append(("our + Debian SpamAssassin rules", (DEBIAN_RULES_DIR,)))
    for label, extra in configs:
        ruleset = load_ruleset(tuple(str(p) for p in extra))
        for accel in (True, False):
            if not accel and args.no_re:
                continue
            started = time.perf_counter()
            engine = Engine(ruleset, use_hyperscan=accel)
            built = time.perf_counter() - started
            kind = "hyperscan" if engine.accelerated else "re"
            print(f"[{label}, {kind}] {len(ruleset.rules)} rules, {len(engine.unsupported)} unsupported, "
                  f"built in {built:.1f} s")
            measure(f"  {label} ({kind})", engine, ham, spam, args.threshold, args.top if accel else 0)


if __name__ == "__main__":
    main()
