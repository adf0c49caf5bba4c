"""End to end on the real stack: SMTP in, Kafka through every service, SMTP out, counted in ClickHouse."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiosmtplib
import pytest

from mailgw_devstack.stack import Stack
from mailgw_devstack.testing import collect
from mailgw_libs import topics

from .conftest import E2E_MAX_MESSAGE_BYTES
from .mail import api, delivered, eicar_zip, gtube, ham, image_spam, queue_id, send_sync, token, wait_for

pytestmark = pytest.mark.e2e


def tracking(stack: Stack, message_id: str, recipient: str = "user@example.com") -> dict[str, Any] | None:
    rows = api(stack.ports.reporting, "/api/v1/tracking", recipient=recipient, limit="1000").json()
    for row in rows.get("rows", rows) if isinstance(rows, dict) else rows:
        if row.get("message_id") == message_id:
            return row
    return None


def final_status(stack: Stack, message_id: str, statuses: set[str], timeout: float = 90,
                 symbol: str = "") -> dict[str, Any]:
    """The tracking row once it shows a final status (and `symbol`: events of different topics land independently)."""

    def ready() -> dict[str, Any] | None:
        row = tracking(stack, message_id)
        if not row or row.get("status") not in statuses:
            return None
        if symbol and symbol not in {s["name"] for s in row.get("symbols", [])}:
            return None
        return row

    row = wait_for(ready, timeout=timeout)
    assert row, f"{message_id}: no tracking row with status in {statuses}: {tracking(stack, message_id)}"
    return row


def test_ham_is_delivered_untouched(stack: Stack) -> None:
    marker = token()
    code, answer = send_sync(stack.ports.smtp, ham(f"Minutes {marker}"))
    assert code == 250 and answer.startswith("2.0.0 Ok: queued as ")
    mails = wait_for(lambda: delivered(stack.delivered_dir, marker), timeout=90)
    assert mails, "ham not delivered to the sink"
    mail = mails[0]
    assert b"X-Spam-Flag" not in mail and b"[SPAM]" not in mail
    assert f"id {queue_id(answer)}".encode() in mail  # our Received header
    assert b"attached are the minutes" in mail
    row = final_status(stack, queue_id(answer), {"delivered"})
    assert row["sender"] == "alice@sender.test"


def test_image_spam_is_quarantined_by_ocr(stack: Stack) -> None:
    # PMG's default rule "Quarantine/Mark Spam (Level 3)" (active, prio 80) quarantines from spam level 3.
    marker = token()
    code, answer = send_sync(stack.ports.smtp, image_spam(f"Picture {marker}"))
    assert code == 250
    row = final_status(stack, queue_id(answer), {"quarantined"}, symbol="PHRASE_PHARMA_BRANDS")
    assert row["score"] >= 3
    assert not delivered(stack.delivered_dir, marker)


def test_gtube_is_quarantined(stack: Stack) -> None:
    marker = token()
    code, answer = send_sync(stack.ports.smtp, gtube(f"Test {marker}"))
    assert code == 250
    mid = queue_id(answer)
    row = final_status(stack, mid, {"quarantined"}, symbol="GTUBE")
    assert row["score"] >= 1000
    items = wait_for(lambda: [q for q in api(stack.ports.reporting, "/api/v1/quarantine").json()["items"]
                              if q["id"] == mid])
    assert items and items[0]["kind"] == "spam"
    raw = api(stack.ports.reporting, f"/api/v1/quarantine/{mid}/raw")
    assert raw.status_code == 200 and marker.encode() in raw.content
    assert not delivered(stack.delivered_dir, marker)


def test_zipped_eicar_is_blocked(stack: Stack) -> None:
    marker = token()
    code, answer = send_sync(stack.ports.smtp, eicar_zip(f"Invoice {marker}"))
    assert code == 250
    row = final_status(stack, queue_id(answer), {"blocked"}, symbol="AV_VIRUS")
    assert any("Eicar" in v for v in row["viruses"])
    # PMG's "Block Viruses" rule notifies the administrator; nothing else may arrive, and never the attachment.
    notices = wait_for(lambda: delivered(stack.delivered_dir, marker), timeout=60)
    assert notices, "no virus notification reached the administrator"
    for mail in notices:
        assert b"postmaster@" in mail.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        assert b"PK\x03\x04" not in mail and b"UEsDB" not in mail  # no zip (raw or base64) in the notice


def test_unknown_relay_domain_is_refused_and_counted(stack: Stack) -> None:
    before = api(stack.ports.reporting, "/api/v1/stats/summary").json()["rejected"]

    async def attempt() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=stack.ports.smtp, source_address=("127.0.0.2", 0),
                               start_tls=False, local_hostname="client.test")
        await smtp.connect()
        await smtp.ehlo()
        await smtp.mail("spammer@sender.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await smtp.rcpt("victim@elsewhere.test")
        assert err.value.code == 554 and "5.7.1" in err.value.message
        await smtp.quit()

    asyncio.run(attempt())
    assert wait_for(lambda: api(stack.ports.reporting, "/api/v1/stats/summary").json()["rejected"] > before)


def test_bad_input_gets_clear_answers_and_nothing_accepted_is_lost(stack: Stack) -> None:
    marker = token()
    samples = {
        "malformed-mime": (f"Subject: mime {marker}\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
                           "--zz\r\nContent-Type: text/plain\r\n\r\nunterminated part\r\n").encode(),
        "8bit-headers": f"Subject: 8bit {marker} \xff\xfe\r\nFrom: \xc3\x28@\xa0\r\n\r\n\xff body\r\n".encode("latin-1"),
        "empty-body": f"Subject: empty {marker}\r\n\r\n".encode(),
    }
    accepted = {}
    for name, raw in samples.items():
        code, answer = send_sync(stack.ports.smtp, raw)
        assert code == 250, (name, code, answer)
        accepted[name] = queue_id(answer)
    # A 0-byte message is accepted too.
    code, answer = send_sync(stack.ports.smtp, b"")
    assert code == 250
    accepted["zero-bytes"] = queue_id(answer)
    # Just over the size limit: a clear 552, nothing queued.
    too_big = f"Subject: big {marker}\r\n\r\n".encode() + (b"y" * 998 + b"\r\n") * (E2E_MAX_MESSAGE_BYTES // 1000 + 1)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        send_sync(stack.ports.smtp, too_big)
    assert err.value.code == 552 and "5.3.4" in err.value.message
    for name, mid in accepted.items():
        row = final_status(stack, mid, {"delivered", "quarantined", "blocked"})
        assert row, name


def test_stats_count_every_fate(stack: Stack) -> None:
    summary = wait_for(lambda: (s := api(stack.ports.reporting, "/api/v1/stats/summary").json())
                       and s["received"] >= 4 and s["delivered"] >= 1 and s["quarantined"] >= 1
                       and s["virus"] >= 1 and s["spam"] >= 2 and s["blocked"] >= 1 and s, timeout=60)
    assert summary, api(stack.ports.reporting, "/api/v1/stats/summary").json()


def test_every_service_is_healthy_and_exports_metrics(stack: Stack) -> None:
    for name, svc in stack.services.items():
        assert api(svc.port, "/healthz").status_code == 200, name
        assert api(svc.port, "/readyz").status_code == 200, name
        assert b"# HELP" in api(svc.port, "/metrics").content, name


def test_admin_cli_reads_stats_and_tracking(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    from mailgw_libs import cli

    api_url = f"http://127.0.0.1:{stack.ports.reporting}"
    cli.main(["--api", api_url, "stats", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["received"] >= 1
    cli.main(["--api", api_url, "tracking", "--recipient", "user@example.com", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(r["recipient"] == "user@example.com" for r in rows if r.get("message_id"))
    with pytest.raises(SystemExit, match="cannot reach"):
        cli.main(["--api", "http://127.0.0.1:1", "stats"])


def test_trace_context_travels_from_ingress_to_delivery(stack: Stack) -> None:
    marker = token()
    code, answer = send_sync(stack.ports.smtp, ham(f"Trace {marker}"))
    assert code == 250
    mid = queue_id(answer)
    final_status(stack, mid, {"delivered"})
    bootstrap = f"127.0.0.1:{stack.infra['kafka'].port}"

    def trace_ids(topic: str) -> set[str]:
        records = asyncio.run(collect(bootstrap, topic, 1, key=mid, timeout=20))
        assert records, f"no {topic} record for {mid}"
        return {dict(r.headers)["traceparent"].decode().split("-")[1] for r in records}

    origin = trace_ids(topics.MAIL_RECEIVED)
    assert len(origin) == 1
    for topic in (topics.MAIL_VERDICTS, topics.MAIL_ACTIONS, topics.MAIL_DELIVERY):
        assert trace_ids(topic) == origin, topic
