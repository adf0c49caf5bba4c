"""YARA rules, compiled once from directories of `.yar`/`.yara` files, matched over bytes.

A rule's meta gives its symbol's weight: `score = 6` (YARA meta has no floats: write "6.5" as a
string) and/or `virus = true` (a hard finding: its name joins `Verdict.viruses`). Settings may
override both per symbol (`YARA_<RULE>`).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yara

BUILTIN_RULES = Path(__file__).resolve().parent / "rules"


@dataclass(frozen=True)
class YaraHit:
    rule: str
    symbol: str
    score: float | None
    virus: bool
    description: str


def symbol_for(rule: str) -> str:
    return "YARA_" + re.sub(r"[^A-Z0-9]+", "_", rule.upper()).strip("_")


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, int | str) and str(value).lower() in ("1", "true", "yes"))


class YaraRules:
    def __init__(self, dirs: list[str]) -> None:
        files: dict[str, str] = {}
        digest = hashlib.sha256()
        for directory in dirs:
            path = Path(directory)
            if not path.is_dir():
                raise FileNotFoundError(f"YARA rule directory {directory} does not exist")
            for rule_file in sorted([*path.glob("*.yar"), *path.glob("*.yara")]):
                namespace = f"{len(files)}_{rule_file.stem}"
                files[namespace] = str(rule_file)
                digest.update(rule_file.read_bytes())
        self.files = files
        self.fingerprint = digest.hexdigest()
        self._rules = yara.compile(filepaths=files) if files else None

    @property
    def count(self) -> int:
        return sum(1 for _ in self._rules) if self._rules is not None else 0

    def match(self, data: bytes, timeout_s: float) -> list[YaraHit]:
        """Rules matching `data`; raises yara.Error (e.g. yara.TimeoutError) for the caller to report."""
        if self._rules is None or not data:
            return []
        hits = []
        for m in self._rules.match(data=data, timeout=max(1, math.ceil(timeout_s))):
            meta = m.meta
            score = meta.get("score")
            hits.append(YaraHit(
                rule=m.rule, symbol=symbol_for(m.rule),
                score=float(score) if isinstance(score, int | float | str) and _is_number(score) else None,
                virus=_truthy(meta.get("virus", False)),
                description=str(meta.get("description", "")),
            ))
        return hits


def _is_number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True
