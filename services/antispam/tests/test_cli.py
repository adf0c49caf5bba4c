import json
import mailbox
from pathlib import Path

import pytest

from mailgw_antispam.checks import GTUBE
from mailgw_libs import cli

HAM = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\n" \
      b"Message-ID: <1@example.org>\r\n\r\nsee you\r\n"


def test_scan_json_on_eml_directory_and_mbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ham.eml").write_bytes(HAM)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "gtube.eml").write_bytes(b"Subject: x\r\n\r\n" + GTUBE + b"\r\n")
    box = mailbox.mbox(tmp_path / "box.mbox")
    box.add(HAM)
    box.add(HAM.replace(b"hi", b"two"))
    box.flush()
    rules = tmp_path / "extra.cf"
    rules.write_text("body EXTRA_RULE /see you/\nscore EXTRA_RULE 0.5\n")
    cli.main(["scan", "--json", "--rules", str(rules), str(tmp_path / "ham.eml"), str(tmp_path / "dir"),
              str(tmp_path / "box.mbox")])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"].rsplit("/", 1)[-1] for r in records] == ["ham.eml", "gtube.eml", "box.mbox#1", "box.mbox#2"]
    ham, gtube = records[0], records[1]
    assert set(ham) == {"path", "score", "threshold", "spam", "symbols"}
    assert ham["spam"] is False and ham["threshold"] == 5.0
    assert ham["symbols"] == [{"name": "EXTRA_RULE", "score": 0.5, "detail": "see you"}] and ham["score"] == 0.5
    assert gtube["spam"] is True and "GTUBE" in {s["name"] for s in gtube["symbols"]}


def test_scan_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.eml").write_bytes(b"Subject: x\r\n\r\n" + GTUBE)
    cli.main(["scan", str(tmp_path / "m.eml")])
    out = capsys.readouterr()
    assert out.out.startswith("SPAM") and "GTUBE" in out.out and "1 messages, 1 spam" in out.err
