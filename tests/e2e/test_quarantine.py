"""Quarantine operations on the real stack: GTUBE is quarantined, released with the CLI, delivered once."""

from __future__ import annotations

import email
import json
import time

import httpx
import pytest

from mailgw_devstack.stack import Stack
from mailgw_libs import cli

from .mail import api, delivered, gtube, queue_id, send_sync, token, wait_for

pytestmark = pytest.mark.e2e


def body_of(raw: bytes) -> bytes:
    payload = email.message_from_bytes(raw).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.replace(b"\r\n", b"\n")


def quarantined(stack: Stack, marker: str) -> tuple[str, bytes]:
    code, answer = send_sync(stack.ports.smtp, gtube(f"Release me {marker}"))
    assert code == 250
    mid = queue_id(answer)
    item = wait_for(lambda: api(stack.ports.reporting, f"/api/v1/quarantine/{mid}").status_code == 200, timeout=90)
    assert item, f"{mid} not quarantined"
    raw = api(stack.ports.reporting, f"/api/v1/quarantine/{mid}/raw")
    assert raw.status_code == 200 and marker.encode() in raw.content
    return mid, raw.content


def test_release_delivers_the_original_once(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    marker = token()
    mid, raw = quarantined(stack, marker)
    api_url = f"http://127.0.0.1:{stack.ports.reporting}"

    cli.main(["--api", api_url, "quarantine", "list", "--json", "--recipient", "user@example.com"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [row] = [r for r in rows if r["id"] == mid]
    assert {k: row[k] for k in ("kind", "sender", "recipient", "state")} == {
        "kind": "spam", "sender": "alice@sender.test", "recipient": "user@example.com", "state": "quarantined"}
    assert row["score"] >= 1000 and marker in row["subject"] and row["received"]
    assert not delivered(stack.delivered_dir, marker)

    cli.main(["--api", api_url, "quarantine", "release", mid])
    assert capsys.readouterr().out.strip() == f"released {mid} to user@example.com"
    mails = wait_for(lambda: delivered(stack.delivered_dir, marker), timeout=60)
    assert mails, "the released message did not arrive"
    time.sleep(3)  # longer than a delivery round trip: a second copy would be there by now
    mails = delivered(stack.delivered_dir, marker)
    assert len(mails) == 1
    assert body_of(mails[0]) == body_of(raw)

    # Released: shown so, a second release is refused (409) unless forced, tracking says delivered.
    item = api(stack.ports.reporting, f"/api/v1/quarantine/{mid}").json()
    assert item["state"] == "released" and item["released_to"] == ["user@example.com"]
    with pytest.raises(SystemExit, match="409"):
        cli.main(["--api", api_url, "quarantine", "release", mid])
    rows = api(stack.ports.reporting, "/api/v1/tracking", recipient="user@example.com", limit="1000").json()["rows"]
    assert wait_for(lambda: any(
        r["message_id"] == mid and r["status"] == "delivered"
        for r in api(stack.ports.reporting, "/api/v1/tracking", recipient="user@example.com",
                     limit="1000").json()["rows"]), timeout=30), rows
    assert len(delivered(stack.delivered_dir, marker)) == 1


def test_delete_hides_the_message(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    marker = token()
    mid, _ = quarantined(stack, marker)
    api_url = f"http://127.0.0.1:{stack.ports.reporting}"
    cli.main(["--api", api_url, "quarantine", "show", mid])
    assert json.loads(capsys.readouterr().out)["id"] == mid
    cli.main(["--api", api_url, "quarantine", "delete", mid])
    assert capsys.readouterr().out.strip() == f"deleted {mid}"
    assert api(stack.ports.reporting, f"/api/v1/quarantine/{mid}").status_code == 404
    assert httpx.post(f"{api_url}/api/v1/quarantine/{mid}/release", timeout=10).status_code == 404
    cli.main(["--api", api_url, "quarantine", "list", "--json"])
    assert mid not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="404"):
        cli.main(["--api", api_url, "quarantine", "show", mid])
    assert not delivered(stack.delivered_dir, marker)
