"""Debian's SpamAssassin rules (package `spamassassin`, /usr/share/spamassassin) load without a crash."""

from collections import Counter
from pathlib import Path

import pytest

from mailgw_antispam.rules import DEBIAN_RULES_DIR, Engine, build_view, load_paths

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "dev"


@pytest.mark.skipif(not (DEBIAN_RULES_DIR / "50_scores.cf").exists(), reason="Debian spamassassin rules not installed")
def test_debian_rules_load_with_a_report_of_unsupported_ones() -> None:
    ruleset = load_paths([DEBIAN_RULES_DIR])
    engine = Engine(ruleset, use_hyperscan=False)  # the Hyperscan build of this set takes ~20 s: see the bench
    print()
    print(ruleset.report().splitlines()[0])
    print(f"{len(engine.unsupported)} rules unsupported by the engine; by reason:")
    reasons = Counter(p.message.split(" ", 2)[0] + " " + p.message.split(" ", 2)[1] for p in engine.unsupported)
    for reason, count in reasons.most_common():
        print(f"  {count:5}  {reason}")
    for problem in engine.unsupported:
        print(f"  unsupported {problem}")
    assert len(ruleset.rules) >= 2000
    assert not ruleset.problems, ruleset.problems[:5]
    runnable = len(ruleset.rules) - len(engine.unsupported)
    assert runnable >= 1500
    messages = [p.read_bytes() for p in sorted((CORPUS / "spam").glob("*.eml"))[:20]] if CORPUS.exists() else []
    for raw in [*messages, b"", b"Subject: x\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"]:
        engine.run(build_view(raw))
    assert "GTUBE" in {h.name for h in engine.run(build_view(
        b"Subject: x\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"))}
