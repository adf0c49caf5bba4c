"""Never an open relay: classic relay tricks over a real SMTP session from an untrusted client.

Commands are sent raw (aiosmtplib's execute_command) so the client library does not clean the addresses up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mailgw_devstack.infra import free_port
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, start_smtp_server
from mailgw_libs.events import MailReceived, SmtpEvent

TRICKS = [
    "<victim@other.test>",
    "<VICTIM@OTHER.TEST.>",
    "<victim%other.test@example.com>",
    '<"victim%other.test"@example.com>',
    '<"victim@other.test"@example.com>',
    "<victim\\@other.test@example.com>",
    "<@example.com:victim@other.test>",
    "<@example.com,@relay.test:victim@other.test>",
    "<other.test!victim@example.com>",
    "<victim@other.test@example.com>",
    "<victim@example.com@other.test>",
    "<victim@[127.0.0.1]>",
    "<victim@[IPv6:::1]>",
    "<victim@127.0.0.1>",
    "<victim@localhost>",
    "<postmaster@other.test>",
    "<victim@example.com.other.test>",
    "<victim@sub.example.com>",
    "<victim@other.test.>",
    "<vic tim@other.test>",
    "<victim\x01@example.com>",
    "<victim@exam\x00ple.com>",
    "victim@other.test",
    "<victim@example..com>",
    "<>",
]


class Recorder:
    def __init__(self) -> None:
        self.queued: list[MailReceived] = []
        self.events: list[SmtpEvent] = []

    async def publish(self, event: MailReceived, raw: bytes) -> None:
        self.queued.append(event)


@pytest.fixture
async def smtp_port() -> AsyncIterator[tuple[int, Recorder]]:
    rec = Recorder()
    handler = IngressHandler(RelayPolicy(["example.com"], ["127.0.0.1/32"]), rec.publish, rec.events.append,
                             "mx.test", max_recipients=100, max_message_bytes=1 << 20)
    port = free_port()
    server = await start_smtp_server(handler, "127.0.0.1", port, 1 << 20, 10_000, 30)
    yield port, rec
    server.close()


class RawClient:
    """A raw SMTP client: sends exactly the bytes given (no client library cleaning addresses up)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        client = cls(reader, writer)
        assert (await client.reply())[0] == 220
        assert (await client.command(b"EHLO client.test"))[0] == 250
        return client

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode("utf-8", "replace")
            lines.append(line[4:].strip())
            if line[3:4] != "-":
                return int(line[:3]), " ".join(lines)

    async def command(self, line: bytes) -> tuple[int, str]:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        await self.command(b"QUIT")
        self.writer.close()


@pytest.mark.parametrize("sender", ["<attacker@other.test>", "<>"])
@pytest.mark.parametrize("rcpt", TRICKS)
async def test_relay_trick_is_refused_with_a_5xx(smtp_port: tuple[int, Recorder], sender: str, rcpt: str) -> None:
    port, rec = smtp_port
    client = await RawClient.connect(port)
    assert (await client.command(f"MAIL FROM:{sender}".encode("latin-1")))[0] == 250
    code, message = await client.command(f"RCPT TO:{rcpt}".encode("latin-1"))
    assert 500 <= code < 600, (rcpt, code, message)
    assert (await client.command(b"DATA"))[0] == 503  # no recipient was accepted
    await client.close()
    assert not rec.queued


# (aiosmtpd itself answers 553 5.1.3 to a trailing-dot domain such as <user@example.com.>: a clear refusal.)
@pytest.mark.parametrize("rcpt", ["<user@example.com>", "<User@EXAMPLE.com>", "<USER@Example.Com>"])
async def test_own_domain_in_any_case_is_accepted(smtp_port: tuple[int, Recorder], rcpt: str) -> None:
    port, rec = smtp_port
    client = await RawClient.connect(port)
    assert (await client.command(b"MAIL FROM:<>"))[0] == 250
    code, message = await client.command(f"RCPT TO:{rcpt}".encode())
    assert code == 250, message
    assert (await client.command(b"DATA"))[0] == 354
    assert (await client.command(b"Subject: ok\r\n\r\nbody\r\n."))[0] == 250
    await client.close()
    assert len(rec.queued) == 1
