"""`mailgw learn`, `mailgw bayes stats|reset|expire` and `mailgw scan --redis` on a real redis-server."""

import json
import mailbox
from pathlib import Path

import pytest

from mailgw_libs import cli

SPAM = ("From: win@prize.example\r\nTo: you@example.com\r\nSubject: cash prize {n}\r\nMessage-ID: <s{n}@prize.example>"
        "\r\n\r\nClaim your cash prize now, casino jackpot wire fee {n}\r\n")
HAM = ("From: alice@example.org\r\nTo: bob@example.com\r\nSubject: meeting {n}\r\nMessage-ID: <h{n}@example.org>"
       "\r\n\r\nNotes from the project meeting and the release agenda {n}\r\n")


def corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Ham as a Maildir and a directory of .eml files; spam as an mbox."""
    maildir = mailbox.Maildir(tmp_path / "ham-maildir")
    for n in range(3):
        maildir.add(HAM.format(n=n).encode())
    emls = tmp_path / "ham-eml"
    (emls / "sub").mkdir(parents=True)
    for n in range(3, 5):
        (emls / "sub" / f"{n}.eml").write_bytes(HAM.format(n=n).encode())
    (emls / "garbage.eml").write_bytes(b"\x00\xff" * 1000)
    box = mailbox.mbox(tmp_path / "spam.mbox")
    for n in range(5):
        box.add(SPAM.format(n=n).encode())
    box.flush()
    return tmp_path / "ham-maildir", emls, tmp_path / "spam.mbox"


def test_learn_stats_scan_expire_reset(tmp_path: Path, redis_url: str, unique: str,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_ANTISPAM_BAYES_MIN_SPAM", "5")
    monkeypatch.setenv("MAILGW_ANTISPAM_BAYES_MIN_HAM", "5")
    monkeypatch.setenv("MAILGW_ANTISPAM_BAYES_SITE", unique)
    maildir, emls, mbox = corpus(tmp_path)
    base = ["--redis", redis_url]
    cli.main(["learn", *base, "--ham", str(maildir), "--ham", str(emls), "--spam", str(mbox)])
    out = capsys.readouterr()
    # the garbage file is a (headerless) message too: it is learned as ham, not a crash
    assert "6  ham learned" in out.out and "5  spam learned" in out.out and "11  messages" in out.err
    cli.main(["learn", *base, "--quiet", "--spam", str(mbox)])
    assert "5  spam unchanged" in capsys.readouterr().out                     # learning again: a no-op
    cli.main(["bayes", "stats", *base])
    stats = capsys.readouterr().out
    assert "spam messages 5" in stats and "ham messages 6" in stats and "learned message ids 11" in stats

    probe = tmp_path / "probe.eml"
    probe.write_bytes(SPAM.format(n=99).encode())
    cli.main(["scan", "--json", "--redis", redis_url, str(probe)])
    record = json.loads(capsys.readouterr().out)
    assert any(s["name"] in ("BAYES_99", "BAYES_999") for s in record["symbols"])

    cli.main(["bayes", "expire", *base, "--days", "0"])
    assert "tokens expired" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["bayes", "reset", *base])                                   # needs --yes
    cli.main(["bayes", "reset", *base, "--yes"])
    capsys.readouterr()
    cli.main(["bayes", "stats", *base])
    assert "tokens 0" in capsys.readouterr().out


def test_learn_needs_paths_and_reports_unreachable_redis(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli.main(["learn", "--redis", "redis://127.0.0.1:1/0"])
    (tmp_path / "m.eml").write_bytes(HAM.format(n=1).encode())
    with pytest.raises(SystemExit, match="Bayes store"):
        cli.main(["learn", "--quiet", "--redis", "redis://127.0.0.1:1/0", "--ham", str(tmp_path / "m.eml")])
