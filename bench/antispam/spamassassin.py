"""Debian's SpamAssassin on the folds: sa-learn on 4 folds, spamd (2 children, local tests only) on the fifth.

Runs under a configuration directory of its own (site config copied from /etc/spamassassin plus our local.cf):
Bayes in the temporary directory, autolearn off, network tests off (`spamd --local`, skip_rbl_checks)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from folds import Sample, Tally

from mailgw_devstack.infra import free_port, wait_port

THRESHOLD = 5.0
CHILDREN = 2


def _site_config(base: Path) -> Path:
    site = base / "site"
    site.mkdir(parents=True)
    for pre in Path("/etc/spamassassin").glob("*.pre"):
        shutil.copy(pre, site / pre.name)
    (base / "bayes").mkdir()
    (site / "local.cf").write_text(
        f"use_bayes 1\nbayes_auto_learn 0\nbayes_path {base / 'bayes' / 'bayes'}\nbayes_file_mode 0777\n"
        f"required_score {THRESHOLD}\nskip_rbl_checks 1\nuse_razor2 0\nuse_pyzor 0\nuse_dcc 0\nlock_method flock\n")
    return site


def _learn(site: Path, label: str, paths: list[Path]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as listing:
        listing.write("\n".join(str(p) for p in paths))
    try:
        subprocess.run(["sa-learn", "--siteconfigpath", str(site), f"--{label}", "--no-sync", "-f", listing.name],
                       check=True, capture_output=True, timeout=3600)
    finally:
        os.unlink(listing.name)


def _scan(port: int, sample: Sample) -> tuple[str, bool]:
    answer = subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(port), "-c", "-x", "-t", "120"],
                            input=sample.raw, capture_output=True, timeout=300)
    if answer.returncode not in (0, 1):  # -x: a failed scan is an error, not a silent "0/0"
        raise RuntimeError(f"spamc failed ({answer.returncode}) on {sample.path}: {answer.stderr[:200]!r}")
    score = float(answer.stdout.decode().split("/")[0] or 0)
    return sample.label, score >= THRESHOLD


def run(samples: list[Sample], base: Path, folds: int = 5, sample_every: int = 0) -> Tally:
    if not shutil.which("spamd") or not shutil.which("sa-learn"):
        raise SystemExit("SpamAssassin is not installed: apt-get install -y spamassassin spamc")
    site = _site_config(base)
    # spamd's children run as nobody: they must reach the Bayes files through our temporary directories.
    for directory in (base, base.parent):
        directory.chmod(0o777 if directory == base else 0o755)
    tally = Tally()
    for fold in range(folds):
        for stale in (base / "bayes").glob("*"):
            stale.unlink()
        started = time.perf_counter()
        train = [s for s in samples if s.fold != fold]
        _learn(site, "spam", [s.path for s in train if s.label == "spam"])
        _learn(site, "ham", [s.path for s in train if s.label == "ham"])
        subprocess.run(["sa-learn", "--siteconfigpath", str(site), "--sync"], check=True, capture_output=True)
        for path in (base / "bayes").glob("*"):
            path.chmod(0o666)
        print(f"  SpamAssassin fold {fold + 1}: trained on {len(train)} in {time.perf_counter() - started:.0f} s",
              flush=True)
        test = [s for s in samples if s.fold == fold]
        if sample_every > 1:
            test = test[::sample_every]
        port = free_port()
        spamd = subprocess.Popen(
            ["spamd", "--siteconfigpath", str(site), "--local", "-i", "127.0.0.1", "-p", str(port), "-m",
             str(CHILDREN), "--min-children", str(CHILDREN), "--min-spare", str(CHILDREN), "-x",
             "-u", "nobody", "-s", str(base / "spamd.log"), "--pidfile", str(base / "spamd.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, 120, spamd, "spamd")
            _scan(port, test[0])  # children warmed up
            started = time.perf_counter()
            with ThreadPoolExecutor(CHILDREN) as pool:
                for label, is_spam in pool.map(functools.partial(_scan, port), test):
                    tally.add(label, is_spam)
            tally.seconds += time.perf_counter() - started
            tally.scanned += len(test)
        finally:
            spamd.terminate()
            spamd.wait(30)
        print("  " + tally.line(f"SpamAssassin after fold {fold + 1}"), flush=True)
    return tally
