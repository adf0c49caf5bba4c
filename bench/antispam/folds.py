"""The dev corpus and its 5 folds (message i of each class goes to fold i % k: deterministic, stratified)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "dev"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str          # "ham" | "spam"
    fold: int
    raw: bytes


def load(corpus: Path = DEFAULT_CORPUS, k: int = 5) -> list[Sample]:
    samples: list[Sample] = []
    for label in ("ham", "spam"):
        for index, path in enumerate(sorted((corpus / label).glob("*.eml"))):
            samples.append(Sample(path=path, label=label, fold=index % k, raw=path.read_bytes()))
    return samples


@dataclass
class Tally:
    spam: int = 0
    caught: int = 0
    ham: int = 0
    false_positives: int = 0
    seconds: float = 0.0
    scanned: int = 0

    def add(self, label: str, is_spam: bool) -> None:
        if label == "spam":
            self.spam += 1
            self.caught += is_spam
        else:
            self.ham += 1
            self.false_positives += is_spam

    @property
    def recall(self) -> float:
        return 100.0 * self.caught / max(1, self.spam)

    @property
    def fp_rate(self) -> float:
        return 100.0 * self.false_positives / max(1, self.ham)

    @property
    def rate(self) -> float:
        return self.scanned / self.seconds if self.seconds else 0.0

    def line(self, name: str) -> str:
        speed = f"; {self.rate:7.1f} msg/s" if self.seconds else ""
        return (f"{name:34} spam recall {self.recall:6.2f} % ({self.caught}/{self.spam}), ham false positives "
                f"{self.fp_rate:5.2f} % ({self.false_positives}/{self.ham}){speed}")
