"""Pre-queue policy over real SMTP sessions: greylisting, welcome/blocklists, rates, resource limits, STARTTLS.

A real client (aiosmtplib, or raw sockets where the test is about the wire), the real server, real Redis;
the bus is a fake publisher. Internet clients bind 127.0.0.2/127.0.0.3; 127.0.0.1 is the trusted network.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_devstack.stack import self_signed_cert
from mailgw_ingress.access import AccessList
from mailgw_ingress.greylist import GreylistPolicy
from mailgw_ingress.ratelimit import RateLimiter
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, make_tls_context, start_smtp_server
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.failfast import make_redis

MAX = 64 * 1024
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.queued: list[tuple[MailReceived, bytes]] = []
        self.events: list[SmtpEvent] = []

    async def publish(self, event: MailReceived, raw: bytes) -> None:
        self.queued.append((event, raw))

    def checks(self) -> list[str]:
        return [e.check for e in self.events]


Server = tuple[int, Recorder, IngressHandler]
MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    servers: list[asyncio.AbstractServer] = []

    async def make(*, session_timeout_s: float = 30, data_timeout_s: float = 600, max_errors: int = 20,
                   pregreet_delay_s: float = 0.0, tls_context: ssl.SSLContext | None = None,
                   **handler_kwargs: Any) -> Server:
        rec = Recorder()
        handler = IngressHandler(RelayPolicy(["example.com"], ["127.0.0.1/32"]), rec.publish, rec.events.append,
                                 "mx.test", max_recipients=100, max_message_bytes=MAX, **handler_kwargs)
        port = free_port()
        servers.append(await start_smtp_server(
            handler, "127.0.0.1", port, MAX, 10_000, session_timeout_s, data_timeout_s=data_timeout_s,
            max_errors=max_errors, pregreet_delay_s=pregreet_delay_s, tls_context=tls_context))
        return port, rec, handler

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"), "mx.test")


async def client(port: int, source: str = "127.0.0.2") -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(source, 0), start_tls=False,
                           local_hostname="client.test", timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def raw(port: int, source: str = "127.0.0.2") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def reply(reader: asyncio.StreamReader) -> str:
    """One (possibly multi-line) SMTP reply; "" at end of stream."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if line[3:4] != b"-":
            break
    return "\n".join(lines)


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        rest = await asyncio.wait_for(reader.read(), 5)  # to end of stream
        return rest == b"" or rest.startswith(b"421 ")  # a timeout says why before closing
    except ConnectionError:
        return True


# --- greylisting ------------------------------------------------------------------------------------

async def test_greylisting_at_rcpt_then_retry_after_delay_is_queued(
        make_server: MakeServer, redis_client: aioredis.Redis, unique: str) -> None:
    clock = FakeClock()
    port, rec, _ = await make_server(greylist=GreylistPolicy(redis_client, f"t:{unique}:", delay_s=180, clock=clock))
    smtp = await client(port)
    await smtp.mail("sender@example.org")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await smtp.rcpt("user@example.com")
    assert err.value.code == 451 and err.value.message == "4.7.1 Greylisted, please try again later"
    event = rec.events[-1]
    assert (event.check, event.code, event.rcpt, event.mail_from) == ("greylist", 451, "user@example.com",
                                                                      "sender@example.org")
    await smtp.quit()

    clock.now += 181
    smtp = await client(port, "127.0.0.3")  # another host of the same /24
    refused, _ = await smtp.sendmail("Sender@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert refused == {} and len(rec.queued) == 1


async def test_greylisting_many_recipients_does_not_count_as_errors(
        make_server: MakeServer, redis_client: aioredis.Redis, unique: str) -> None:
    port, rec, _ = await make_server(greylist=GreylistPolicy(redis_client, f"t:{unique}:", clock=FakeClock()),
                                     max_errors=3)
    smtp = await client(port)
    await smtp.mail("sender@example.org")
    for i in range(6):
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
            await smtp.rcpt(f"u{i}@example.com")
        assert err.value.code == 451
    assert (await smtp.noop())[0] == 250
    await smtp.quit()
    assert rec.checks() == ["greylist"] * 6


async def test_trusted_and_welcomelisted_clients_skip_greylisting(
        make_server: MakeServer, redis_client: aioredis.Redis, unique: str) -> None:
    port, rec, _ = await make_server(greylist=GreylistPolicy(redis_client, f"t:{unique}:", clock=FakeClock()),
                                     welcomelist=AccessList.parse(["127.0.0.3", "friend@partner.test"]))
    for source, sender in [("127.0.0.1", "me@example.com"), ("127.0.0.3", "x@example.org"),
                           ("127.0.0.2", "friend@partner.test")]:
        smtp = await client(port, source)
        refused, _ = await smtp.sendmail(sender, ["user@example.com"], MESSAGE)
        await smtp.quit()
        assert refused == {}
    assert len(rec.queued) == 3 and "greylist" not in rec.checks()


async def test_greylisting_with_redis_down_accepts(make_server: MakeServer) -> None:
    dead = make_redis(f"redis://127.0.0.1:{free_port()}/0", 0.5)
    try:
        port, rec, _ = await make_server(greylist=GreylistPolicy(dead, "t:", clock=FakeClock()))
        smtp = await client(port)
        refused, _ = await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE)
        await smtp.quit()
        assert refused == {} and len(rec.queued) == 1
    finally:
        await dead.aclose()


# --- welcomelist / blocklist ------------------------------------------------------------------------

async def test_blocklisted_client_refused_before_the_banner(make_server: MakeServer) -> None:
    port, rec, _ = await make_server(blocklist=AccessList.parse(["127.0.0.2/32"]))
    reader, writer = await raw(port)
    assert (await reply(reader)).startswith("554 5.7.1")
    assert await closed(reader)
    writer.close()
    assert rec.events[-1].check == "blocklist" and rec.events[-1].client_ip == "127.0.0.2"
    smtp = await client(port, "127.0.0.3")  # others are served
    await smtp.quit()


async def test_blocklisted_sender_refused_at_mail_from_unless_welcomelisted(make_server: MakeServer) -> None:
    port, rec, _ = await make_server(blocklist=AccessList.parse(["spam.test", "bad@example.org"]),
                                     welcomelist=AccessList.parse(["127.0.0.3"]))
    smtp = await client(port)
    for sender in ["x@spam.test", "BAD@example.org"]:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await smtp.mail(sender)
        assert err.value.code == 554 and "5.7.1" in err.value.message
    assert rec.events[-1].check == "blocklist" and rec.events[-1].reason == "sender blocklisted"
    refused, _ = await smtp.sendmail("good@example.org", ["user@example.com"], MESSAGE)
    assert refused == {}
    await smtp.quit()
    smtp = await client(port, "127.0.0.3")
    refused, _ = await smtp.sendmail("x@spam.test", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert refused == {}


# --- rates and resources ----------------------------------------------------------------------------

async def test_message_rate_per_client_trips_and_recovers(
        make_server: MakeServer, redis_client: aioredis.Redis, unique: str) -> None:
    clock = FakeClock()
    port, rec, _ = await make_server(rates=RateLimiter(redis_client, f"t:{unique}:", clock=clock),
                                     messages_per_minute_per_ip=2, messages_per_minute_per_sender=100)
    smtp = await client(port)
    for _ in range(2):
        refused, _ = await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE)
        assert refused == {}
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await smtp.mail("s@example.org")
    assert err.value.code == 451 and "4.7.1" in err.value.message
    assert rec.events[-1].check == "rate" and rec.events[-1].mail_from == "s@example.org"
    # The trusted network is exempt.
    trusted = await client(port, "127.0.0.1")
    assert (await trusted.sendmail("me@example.com", ["user@example.com"], MESSAGE))[0] == {}
    await trusted.quit()
    clock.now += 60
    refused, _ = await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE)
    assert refused == {}
    await smtp.quit()


async def test_too_many_connections_from_one_ip(make_server: MakeServer) -> None:
    port, rec, handler = await make_server(max_connections_per_ip=2)
    conns = [await raw(port) for _ in range(2)]
    for reader, _ in conns:
        assert (await reply(reader)).startswith("220")
    reader, writer = await raw(port)
    assert (await reply(reader)).startswith("421 4.7.0")
    assert await closed(reader)
    writer.close()
    assert rec.events[-1].check == "max_connections"
    # Another client is served; so is the first client again once a connection is gone.
    other = await client(port, "127.0.0.3")
    await other.quit()
    conns[0][1].close()
    for _ in range(100):
        if handler.connections.get("127.0.0.2") == 1:
            break
        await asyncio.sleep(0.01)
    smtp = await client(port)
    refused, _ = await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE)
    assert refused == {}
    await smtp.quit()
    conns[1][1].close()


async def test_max_errors_disconnects(make_server: MakeServer) -> None:
    port, rec, _ = await make_server(max_errors=3)
    reader, writer = await raw(port)
    await reply(reader)
    for _ in range(2):
        writer.write(b"BOGUS\r\n")
        assert (await reply(reader)).startswith("500")
    writer.write(b"MAIL FROM:<a@b>\r\n")  # before HELO: 503, the third error
    assert (await reply(reader)).startswith("503")
    assert (await reply(reader)) == "421 4.7.0 Too many errors"
    assert await closed(reader)
    writer.close()
    assert rec.events[-1].check == "max_errors"


async def test_one_megabyte_command_line(make_server: MakeServer) -> None:
    port, _, _ = await make_server()
    reader, writer = await raw(port)
    await reply(reader)
    writer.write(b"MAIL FROM:<" + b"a" * (1024 * 1024) + b"@example.org>\r\n")
    assert (await reply(reader)).startswith("500 5.5.2 Command line too long")
    writer.write(b"NOOP\r\n")
    assert (await reply(reader)).startswith("250")
    writer.close()
    smtp = await client(port, "127.0.0.3")
    assert (await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE))[0] == {}
    await smtp.quit()


async def test_binary_garbage_gets_errors_then_disconnect(make_server: MakeServer) -> None:
    port, rec, _ = await make_server(max_errors=10)
    reader, writer = await raw(port)
    await reply(reader)
    garbage = bytes(range(256)) * 40 + b"\x00\xff\r\n\xc3\x28\x80\r\n"
    writer.write(garbage * 3)
    answers = []
    while (answer := await reply(reader)) != "":
        answers.append(answer)
    writer.close()
    assert answers and all(a[:1] in "45" for a in answers)
    # Whichever limit comes first: ours (errors) or aiosmtpd's (unrecognized commands); both are recorded.
    assert answers[-1] in ("421 4.7.0 Too many errors", "502 5.5.1 Too many unrecognized commands, goodbye.")
    assert rec.events[-1].check in ("max_errors", "bogus_commands")
    smtp = await client(port, "127.0.0.3")
    assert (await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE))[0] == {}
    await smtp.quit()


async def test_early_talker_refused(make_server: MakeServer) -> None:
    port, rec, _ = await make_server(pregreet_delay_s=0.3)
    reader, writer = await raw(port)
    writer.write(b"EHLO impatient.test\r\n")
    answer = await reply(reader)
    assert answer.startswith("554 5.5.1"), answer
    assert await closed(reader)
    writer.close()
    assert rec.events[-1].check == "early_talker"
    # A client that waits for the banner is served.
    smtp = await client(port)
    assert (await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE))[0] == {}
    await smtp.quit()


async def test_data_timeout_closes_a_stalled_transfer(make_server: MakeServer) -> None:
    port, _, _ = await make_server(data_timeout_s=0.5)
    reader, writer = await raw(port)
    await reply(reader)
    for command in (b"EHLO c.test", b"MAIL FROM:<s@example.org>", b"RCPT TO:<u@example.com>", b"DATA"):
        writer.write(command + b"\r\n")
        await reply(reader)
    writer.write(b"Subject: slow\r\n")  # and then nothing
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await closed(reader)
    assert loop.time() - started < 3
    writer.close()


# --- STARTTLS ---------------------------------------------------------------------------------------

def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_starttls_recorded_in_event_and_received_header(
        make_server: MakeServer, tls_files: tuple[Path, Path]) -> None:
    context = await asyncio.to_thread(make_tls_context, str(tls_files[0]), str(tls_files[1]))
    port, rec, _ = await make_server(tls_context=context)
    smtp = await client(port)
    assert smtp.supports_extension("starttls")
    await smtp.starttls(tls_context=no_verify())
    await smtp.ehlo()
    refused, _ = await smtp.sendmail("s@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert refused == {}
    event, stamped = rec.queued[0]
    assert event.tls is not None and event.tls.version.startswith("TLSv1.") and event.tls.cipher
    header = stamped.split(b"\r\n\r\n", 1)[0].decode()
    assert f"(using {event.tls.version} with cipher {event.tls.cipher})" in header
    assert "with ESMTPS id" in header and event.client_helo == "client.test"


async def test_tls_required_sender_domain(make_server: MakeServer, tls_files: tuple[Path, Path]) -> None:
    context = await asyncio.to_thread(make_tls_context, str(tls_files[0]), str(tls_files[1]))
    port, rec, _ = await make_server(tls_context=context, tls_required_sender_domains=["Bank.test"])
    smtp = await client(port)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await smtp.mail("alice@bank.test")
    assert err.value.code == 530 and err.value.message == "5.7.0 Must issue a STARTTLS command first"
    assert rec.events[-1].check == "tls_required"
    # Other domains need no TLS; with TLS the domain is accepted.
    assert (await smtp.sendmail("bob@other.test", ["user@example.com"], MESSAGE))[0] == {}
    await smtp.starttls(tls_context=no_verify())
    await smtp.ehlo()
    assert (await smtp.sendmail("alice@bank.test", ["user@example.com"], MESSAGE))[0] == {}
    await smtp.quit()
    assert rec.queued[-1][0].tls is not None
