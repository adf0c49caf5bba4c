"""Hits of every rule of our rule set on the dev corpus, ham vs spam (sub-rules and zero-scored rules
included): the evidence for each rule. A rule that hits ham is a false-positive risk and is reported first.

    .venv/bin/python bench/antispam_rule_hits.py [--corpus ../shared/corpus/dev] [--rules FILE.cf] [--all]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from mailgw_antispam.rules import Engine, build_view, load_ruleset
from mailgw_antispam.rules.parser import load_paths

ROOT = Path(__file__).resolve().parents[1]


def family(name: str, file: str) -> str:
    return Path(file).stem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "dev")
    parser.add_argument("--rules", type=Path, action="append", help="only these .cf files (default: our set)")
    parser.add_argument("--all", action="store_true", help="list every rule, not only those hitting ham")
    args = parser.parse_args()
    ruleset = load_paths(args.rules) if args.rules else load_ruleset()
    engine = Engine(ruleset)
    for problem in [*ruleset.problems, *engine.unsupported]:
        print(f"problem: {problem}")
    ham_hits: Counter[str] = Counter()
    spam_hits: Counter[str] = Counter()
    for label, counter in (("ham", ham_hits), ("spam", spam_hits)):
        for path in sorted((args.corpus / label).glob("*.eml")):
            values, _ = engine.evaluate(build_view(path.read_bytes()))
            counter.update(values.keys())
    by_family: dict[str, list[int]] = {}
    rows = []
    for name, rule in ruleset.rules.items():
        fam = family(name, rule.file)
        h, s = ham_hits.get(name, 0), spam_hits.get(name, 0)
        if not name.startswith("__"):
            counts = by_family.setdefault(fam, [0, 0, 0])
            counts[0] += 1
            counts[1] += h
            counts[2] += s
        rows.append((h, -s, fam, name, ruleset.score(name)))
    rows.sort()
    reported = [r for r in rows if not r[3].startswith("__")]
    print(f"{len(ruleset.rules)} rules ({len(reported)} scored/reported, "
          f"{sum(1 for r in reported if r[0])} hit ham, {sum(1 for r in reported if not r[1])} hit no spam)")
    for h, s, fam, name, score in sorted(rows, key=lambda r: (-r[0], r[1])):
        if args.all or (h and not name.startswith("__")):
            print(f"  {name:34} {fam:26} score {score:5.2f}  ham {h:4}  spam {-s:4}")
    print("family                      rules  ham-hits  spam-hits")
    for fam, (n, h, s) in sorted(by_family.items()):
        print(f"  {fam:26} {n:5} {h:9} {s:10}")


if __name__ == "__main__":
    main()
