"""The spam report on the real stack: GTUBE is quarantined, the report reaches the user's mailbox through
delivery, and its release link delivers the original once."""

from __future__ import annotations

import email
import re
import time
from datetime import timedelta
from email.message import Message

import httpx
import pytest

from mailgw_devstack.stack import Stack
from mailgw_libs import cli
from mailgw_reporting.links import LinkSigner

from .conftest import E2E_REPORT_SECRET
from .mail import delivered, token, wait_for
from .test_quarantine import body_of, quarantined

pytestmark = pytest.mark.e2e

LINK = re.compile(r"/quarantine/link/(release|delete|welcomelist)/([A-Za-z0-9_.\-]+)")
SIGNER = LinkSigner(E2E_REPORT_SECRET, timedelta(days=1))


def text_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw)
    parts = [p for p in msg.walk() if isinstance(p, Message) and p.get_content_type() == "text/plain"]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def reports_listing(stack: Stack, message_id: str) -> list[tuple[bytes, str]]:
    """Delivered spam reports (raw, decoded text) that list `message_id`."""
    found = []
    for raw in delivered(stack.delivered_dir, "X-Mailgw-Report-ID"):
        text = text_of(raw)
        if any(SIGNER.check(p, t).message_id == message_id for p, t in LINK.findall(text)):
            found.append((raw, text))
    return found


def originals(stack: Stack, marker: str) -> list[bytes]:
    """Delivered mail with the marker that is not a spam report (the report lists the marker too)."""
    return [raw for raw in delivered(stack.delivered_dir, marker) if b"X-Mailgw-Report-ID" not in raw]


def test_report_link_releases_the_message(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    marker = token()
    mid, raw = quarantined(stack, marker)
    api_url = f"http://127.0.0.1:{stack.ports.reporting}"

    cli.main(["--api", api_url, "quarantine", "report"])
    assert re.fullmatch(r"sent [1-9]\d* spam report\(s\)", capsys.readouterr().out.strip())
    reports = wait_for(lambda: reports_listing(stack, mid), timeout=60)
    assert reports, "the spam report did not arrive"
    [(report, text)] = reports
    head = email.message_from_bytes(report)
    assert head["To"] == "user@example.com" and head["Subject"].startswith("Quarantine report")
    assert marker in text
    links = {p: t for p, t in LINK.findall(text) if SIGNER.check(p, t).message_id == mid}
    assert set(links) == {"release", "delete", "welcomelist"}
    assert not originals(stack, marker)  # the original is still in quarantine

    release = f"{api_url}/quarantine/link/release/{links['release']}"
    assert httpx.get(release, timeout=10).status_code == 200  # a prefetch releases nothing
    tampered = f"{api_url}/quarantine/link/delete/{links['release']}"
    assert httpx.post(tampered, timeout=10).status_code == 403
    assert httpx.post(release, timeout=10).status_code == 200
    mails = wait_for(lambda: originals(stack, marker), timeout=60)
    assert mails, "the released message did not arrive"
    time.sleep(3)  # a second copy would be there by now
    [original] = originals(stack, marker)
    assert body_of(original) == body_of(raw)
    assert httpx.post(release, timeout=10).status_code == 409
    assert httpx.get(f"{api_url}/api/v1/quarantine/{mid}", timeout=10).json()["released_to"] == ["user@example.com"]
    # Reported once: a second run does not list it again.
    cli.main(["--api", api_url, "quarantine", "report", "--json"])
    capsys.readouterr()
    time.sleep(2)
    assert len(reports_listing(stack, mid)) == 1
