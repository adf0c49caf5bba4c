"""The SMTP dialogue with a real SMTP client (aiosmtplib) against the real server; the bus is a fake publisher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from mailgw_devstack.infra import free_port
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, start_smtp_server
from mailgw_libs.events import MailReceived, SmtpEvent

MAX = 64 * 1024


class Recorder:
    def __init__(self) -> None:
        self.queued: list[tuple[MailReceived, bytes]] = []
        self.events: list[SmtpEvent] = []
        self.fail = False

    async def publish(self, event: MailReceived, raw: bytes) -> None:
        if self.fail:
            raise ConnectionError("bus down")
        self.queued.append((event, raw))


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Recorder]]:
    rec = Recorder()
    handler = IngressHandler(RelayPolicy(["example.com"], ["127.0.0.1/32"]), rec.publish, rec.events.append,
                             "mx.test", max_recipients=3, max_message_bytes=MAX)
    port = free_port()
    srv = await start_smtp_server(handler, "127.0.0.1", port, MAX, 10_000, 30)
    yield port, rec
    srv.close()


async def client(port: int, source: str = "127.0.0.2") -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(source, 0), start_tls=False,
                           local_hostname="client.test")
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def test_inbound_mail_is_queued_with_envelope_and_received_header(server: tuple[int, Recorder]) -> None:
    port, rec = server
    smtp = await client(port)
    await smtp.mail("sender@example.org")
    await smtp.rcpt("user@example.com")
    code, text = await smtp.data(b"Subject: hi\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n")
    await smtp.quit()
    assert code == 250 and text.startswith("2.0.0 Ok: queued as ")
    event, raw = rec.queued[0]
    assert text.endswith(event.message_id)
    assert event.client_ip == "127.0.0.2" and event.client_helo == "client.test"
    assert event.mail_from == "sender@example.org" and event.rcpt_tos == ["user@example.com"]
    assert event.subject == "hi" and event.rfc_message_id == "<x@y>" and event.direction == "in"
    assert raw.startswith(b"Received: from client.test ([127.0.0.2])")
    assert f"id {event.message_id}".encode() in raw
    assert raw.endswith(b"Subject: hi\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n")
    assert event.size == len(raw)


async def test_relay_denied_for_foreign_domain(server: tuple[int, Recorder]) -> None:
    port, rec = server
    smtp = await client(port)
    await smtp.mail("s@example.org")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await smtp.rcpt("victim@other.org")
    assert err.value.code == 554 and "5.7.1" in err.value.message and "relay denied" in err.value.message
    await smtp.quit()
    await asyncio.sleep(0)
    assert rec.events and rec.events[0].check == "relay" and rec.events[0].rcpt == "victim@other.org"
    assert not rec.queued


async def test_trusted_client_relays_outbound(server: tuple[int, Recorder]) -> None:
    port, rec = server
    smtp = await client(port, "127.0.0.1")
    await smtp.sendmail("me@example.com", ["them@other.org"], b"Subject: out\r\n\r\nx\r\n")
    await smtp.quit()
    assert rec.queued[0][0].direction == "out"


async def test_bus_down_gives_451_and_nothing_is_claimed_queued(server: tuple[int, Recorder]) -> None:
    port, rec = server
    rec.fail = True
    smtp = await client(port)
    await smtp.mail("s@example.org")
    await smtp.rcpt("u@example.com")
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await smtp.data(b"Subject: x\r\n\r\nbody\r\n")
    assert err.value.code == 451 and "4.3.0" in err.value.message
    await smtp.quit()


async def test_size_limit_advertised_and_enforced(server: tuple[int, Recorder]) -> None:
    port, rec = server
    smtp = await client(port)
    assert smtp.supports_extension("size") and smtp.esmtp_extensions["size"] == str(MAX)
    await smtp.mail("s@example.org")
    await smtp.rcpt("u@example.com")
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX // 1000 + 1)
    with pytest.raises(aiosmtplib.SMTPDataError) as err:
        await smtp.data(body)
    assert err.value.code == 552 and "5.3.4" in err.value.message
    # The session goes on: a message within the limit is still accepted.
    await smtp.rset()
    refused, _ = await smtp.sendmail("s@example.org", ["u@example.com"], b"Subject: ok\r\n\r\nfine\r\n")
    assert refused == {}
    assert len(rec.queued) == 1
    await smtp.quit()


async def test_declared_size_over_limit_refused_at_mail_from(server: tuple[int, Recorder]) -> None:
    port, _ = server
    smtp = await client(port)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await smtp.mail("s@example.org", options=[f"SIZE={MAX + 1}"])
    assert err.value.code == 552
    await smtp.quit()


async def test_too_many_recipients(server: tuple[int, Recorder]) -> None:
    port, _ = server
    smtp = await client(port)
    await smtp.mail("s@example.org")
    for i in range(3):
        await smtp.rcpt(f"u{i}@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await smtp.rcpt("u4@example.com")
    assert err.value.code == 452
    await smtp.quit()


@pytest.mark.parametrize("body", [
    b"",                                                          # 0-byte body
    b"\xff\xfe Subject: \x80\x81\x82\r\nFrom: \xc3\x28@\xa0\r\n\r\n\xff",  # 8-bit garbage headers
    b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nbroken",  # malformed MIME
    b"no header at all, just text\r\n",
])
async def test_bad_input_is_accepted_and_kept_byte_exact(server: tuple[int, Recorder], body: bytes) -> None:
    port, rec = server
    smtp = await client(port)
    await smtp.mail("s@example.org")
    await smtp.rcpt("u@example.com")
    code, _ = await smtp.data(body)
    await smtp.quit()
    assert code == 250
    event, raw = rec.queued[-1]
    assert raw.startswith(b"Received: from client.test")
    assert raw.endswith(body.rstrip(b"\r\n") + (b"\r\n" if body else b""))
    assert event.size == len(raw)


async def test_data_without_recipients_is_refused(server: tuple[int, Recorder]) -> None:
    port, _ = server
    smtp = await client(port)
    await smtp.mail("s@example.org")
    code, message = await smtp.execute_command(b"DATA")
    assert code == 503 and "5.5.1" in message
    await smtp.quit()
