"""`mailgw config ...` end to end against a real broker (Tansu)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import yaml

from mailgw_libs.cli import main
from mailgw_libs.config.document import load_text
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "config" / "gateway.example.yaml"


def mailgw(*args: str) -> None:
    main(["config", *args])


def history(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    mailgw("history", "--json", "--bootstrap", bootstrap)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mailgw("validate", str(EXAMPLE))
    assert "valid (sha256" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", "trusted_networks: [300.1.1.0/24]\n")
    with pytest.raises(SystemExit, match=r"trusted_networks\[0\]: not an IP network"):
        mailgw("validate", bad)


def test_apply_export_history_rollback(fresh_kafka: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mailgw("apply", str(EXAMPLE), "--bootstrap", fresh_kafka, "--yes", "--comment", "first", "--author", "alice")
    out = capsys.readouterr().out
    # The diff against the shipped defaults, then the result.
    assert "--- shipped defaults" in out and "+- example.org" in out and "published version 1" in out

    mailgw("apply", str(EXAMPLE), "--bootstrap", fresh_kafka, "--yes")
    assert "no change against version 1: nothing published" in capsys.readouterr().out

    changed = EXAMPLE.read_text().replace("  - example.org\n", "  - example.org\n  - example.net\n", 1)
    mailgw("apply", write(tmp_path, "v2.yaml", changed), "--bootstrap", fresh_kafka, "-y", "-m", "add example.net")
    out = capsys.readouterr().out
    assert "--- version 1" in out and "+- example.net" in out and "published version 2" in out

    mailgw("export", "--bootstrap", fresh_kafka)
    exported = capsys.readouterr().out
    assert exported.startswith("# mailgw configuration: version 2")
    assert load_text(exported).relay_domains == ["example.com", "example.org", "example.net"]
    assert yaml.safe_load(exported)["rules"] is not None  # the export is complete, rules included

    mailgw("export", "--version", "1", "--bootstrap", fresh_kafka)
    assert load_text(capsys.readouterr().out).relay_domains == ["example.com", "example.org"]

    mailgw("rollback", "1", "--bootstrap", fresh_kafka, "--yes")
    out = capsys.readouterr().out
    assert "-- example.net" in out and "published version 3" in out

    rows = history(fresh_kafka, capsys)
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert [r["comment"] for r in rows] == ["first", "add example.net", "rollback to version 1"]
    assert rows[0]["author"] == "alice" and rows[2]["rollback_of"] == 1 and rows[2]["sha256"] == rows[0]["sha256"]

    mailgw("history", "--bootstrap", fresh_kafka)
    assert "(rollback to 1)" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="no version 9"):
        mailgw("rollback", "9", "--bootstrap", fresh_kafka, "--yes")


@pytest.mark.parametrize(("text", "expected"), [
    ("trusted_networks: [10.1.2.3/16]", r"trusted_networks\[0\]: '10.1.2.3/16' has host bits set"),
    ("ingress: {recipient_verification: {mode: ldap, ldap_profile: nope}}", "unknown LDAP profile 'nope'"),
    ("relay_domains: &a [x.com]\nother: *a\n", "anchors and aliases"),
    ("relay_domains: [a.com]\nrelay_domains: [b.com]\n", "duplicate key 'relay_domains'"),
])
def test_an_invalid_file_publishes_nothing(fresh_kafka: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           text: str, expected: str) -> None:
    with pytest.raises(SystemExit, match=expected) as info:
        mailgw("apply", write(tmp_path, "bad.yaml", text), "--bootstrap", fresh_kafka, "--yes")
    assert "nothing published" in str(info.value.code)
    assert history(fresh_kafka, capsys) == []


def test_an_invalid_rule_system_publishes_nothing(fresh_kafka: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"rules\.") as info:
        mailgw("apply", write(tmp_path, "bad.yaml", "rules: {no_such_section: 1}\n"), "--bootstrap", fresh_kafka, "-y")
    assert "nothing published" in str(info.value.code)
    assert history(fresh_kafka, capsys) == []


def test_apply_is_refused_when_the_version_changed_after_the_diff(
        fresh_kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mine = write(tmp_path, "mine.yaml", "relay_domains: [mine.example]\n")

    def another_admin_applies_while_i_read_the_diff(_prompt: str) -> str:
        store = ConfigStore(ServiceSettings(kafka_bootstrap=fresh_kafka))
        asyncio.run(store.publish(load_text("relay_domains: [theirs.example]"), 0, "bob", "meanwhile"))
        return "y"

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", another_admin_applies_while_i_read_the_diff)
    with pytest.raises(SystemExit, match="changed since the diff was shown"):
        mailgw("apply", mine, "--bootstrap", fresh_kafka)
    assert [r["author"] for r in history(fresh_kafka, capsys)] == ["bob"]

    # --force publishes on top of the version that is current now.
    monkeypatch.setattr("builtins.input", lambda _prompt: "y")
    mailgw("apply", mine, "--bootstrap", fresh_kafka, "--force", "--author", "alice")
    assert "published version 2" in capsys.readouterr().out
    assert [r["author"] for r in history(fresh_kafka, capsys)] == ["bob", "alice"]


def test_declining_or_no_terminal_publishes_nothing(fresh_kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    mine = write(tmp_path, "mine.yaml", "relay_domains: [mine.example]\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(SystemExit, match="pass --yes"):
        mailgw("apply", mine, "--bootstrap", fresh_kafka)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _prompt: "n")
    mailgw("apply", mine, "--bootstrap", fresh_kafka)
    assert "nothing published" in capsys.readouterr().out
    assert history(fresh_kafka, capsys) == []


def test_an_unreachable_broker_is_a_readable_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"cannot use Kafka at 127\.0\.0\.1:1"):
        mailgw("history", "--bootstrap", "127.0.0.1:1")


def test_prune(fresh_kafka: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        mailgw("apply", write(tmp_path, f"v{i}.yaml", f"relay_domains: [v{i}.example]\n"), "--bootstrap", fresh_kafka, "-y")
    with pytest.raises(SystemExit, match="at least 1"):
        mailgw("prune", "--keep", "0", "--bootstrap", fresh_kafka, "--yes")
    capsys.readouterr()
    mailgw("prune", "--keep", "1", "--bootstrap", fresh_kafka, "--yes")
    assert "pruned 2 versions" in capsys.readouterr().out
    mailgw("prune", "--keep", "1", "--bootstrap", fresh_kafka, "--yes")
    assert "nothing to prune" in capsys.readouterr().out
    mailgw("export", "--bootstrap", fresh_kafka)
    assert load_text(capsys.readouterr().out).relay_domains == ["v2.example"]
