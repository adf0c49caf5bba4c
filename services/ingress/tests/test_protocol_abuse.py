"""Protocol abuse over raw sockets (aiosmtplib refuses to send most of this): the server answers each abuse
with a clear error, never crashes, and keeps serving well-behaved clients at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiosmtplib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgw_ingress.hostchecks import HostChecks
from mailgw_ingress.relay import RelayPolicy
from mailgw_libs.directory import normalise_address
from mailgw_libs.resolver import make_resolver

from .conftest import Gateway, MakeGateway

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.2", greet: bool = True) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=2**20)
        raw = cls(reader, writer)
        if greet:
            assert (await raw.reply()).startswith("220")
        return raw

    async def reply(self, timeout: float = 10) -> str:
        """One reply (multi-line joined by newlines); "" when the server closed the connection."""
        lines = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), timeout)
            except ConnectionError:
                line = b""
            if not line:
                break
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                break
        return "\n".join(lines)

    async def command(self, line: bytes) -> str:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed(self, timeout: float = 10) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


async def still_serving(gw: Gateway) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, source_address=("127.0.0.3", 0), start_tls=False,
                           local_hostname="good.test", timeout=10)
    await smtp.connect()
    before = len(gw.queued)
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert len(gw.queued) == before + 1


async def test_one_megabyte_command_line(gateway: MakeGateway) -> None:
    gw = await gateway()
    raw = await Raw.connect(gw.port)
    assert (await raw.command(b"EHLO client.test")).startswith("250")
    assert await raw.command(b"MAIL FROM:<" + b"a" * (1 << 20) + b"@example.org>") == "500 5.5.2 Command line too long"
    assert (await raw.command(b"NOOP")).startswith("250")
    raw.close()
    await still_serving(gw)


async def test_one_megabyte_line_in_data(gateway: MakeGateway) -> None:
    gw = await gateway(max_message_bytes=4 << 20)
    raw = await Raw.connect(gw.port)
    for line in [b"EHLO client.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<user@example.com>", b"DATA"]:
        assert (await raw.command(line))[:1] in "23"
    answer = await raw.command(b"Subject: x\r\n\r\n" + b"x" * (1 << 20) + b"\r\n.")
    assert answer.startswith("500 5.5.2") or answer.startswith("552 5.3.4"), answer
    raw.close()
    assert gw.queued == []
    await still_serving(gw)


async def test_ten_thousand_recipients(gateway: MakeGateway) -> None:
    gw = await gateway(max_errors=20)
    raw = await Raw.connect(gw.port)
    assert (await raw.command(b"EHLO client.test")).startswith("250")
    assert (await raw.command(b"MAIL FROM:<a@example.org>")).startswith("250")
    # Pipelined in groups of 100 (reading each group's replies): the server drops the connection at the error
    # limit and a client that keeps writing into a closed socket would lose the replies to a reset.
    answers: list[str] = []
    for start in range(0, 10_000, 100):
        raw.writer.write(b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(start, start + 100)))
        await raw.writer.drain()
        for _ in range(100):
            answer = await raw.reply()
            if answer == "":
                break
            answers.append(answer)
            if answer.startswith("421"):
                break
        if answers and answers[-1].startswith("421"):
            break
    assert answers[:100] == ["250 2.1.5 Ok"] * 100
    assert set(answers[100:-1]) == {"452 4.5.3 Too many recipients"}
    assert answers[-1] == "421 4.7.0 Too many errors"
    assert await raw.closed()
    assert "max_errors" in gw.checks()
    await still_serving(gw)


async def test_binary_garbage(gateway: MakeGateway) -> None:
    gw = await gateway(max_errors=10)
    raw = await Raw.connect(gw.port)
    garbage = bytes(range(256)) * 4 + os.urandom(4096)
    raw.writer.write(garbage.replace(b"\n", b"\r\n") + b"\r\n")
    await raw.writer.drain()
    answers = []
    while (answer := await raw.reply()) != "":
        answers.append(answer)
    assert answers and all(a[:1] in "45" for a in answers), answers
    assert answers[-1].startswith("421") or answers[-1].startswith("502")
    await still_serving(gw)


async def test_slowloris_is_cut_off(gateway: MakeGateway) -> None:
    gw = await gateway(session_timeout_s=1.0)
    raw = await Raw.connect(gw.port)

    async def dribble() -> None:
        for byte in b"EHLO slow.client.example.org with a very long and slow greeting line":
            raw.writer.write(bytes([byte]))
            await raw.writer.drain()
            await asyncio.sleep(0.2)

    drip = asyncio.ensure_future(dribble())
    try:
        # aiosmtpd's command timeout restarts only on a complete command: the dribbler is disconnected.
        answer = await raw.reply(timeout=30)
        assert answer.startswith("421"), answer
        assert await raw.closed()
    finally:
        drip.cancel()
    await still_serving(gw)


async def test_pipelining_advertised_and_handled(gateway: MakeGateway) -> None:
    gw = await gateway()
    raw = await Raw.connect(gw.port)
    assert "250-PIPELINING" in await raw.command(b"EHLO client.test")
    raw.writer.write(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\nRCPT TO:<y@elsewhere.test>\r\n"
                     b"RCPT TO:<z@example.com>\r\nDATA\r\n")
    answers = [await raw.reply() for _ in range(5)]
    assert [a[:3] for a in answers] == ["250", "250", "554", "250", "354"]
    assert (await raw.command(MESSAGE + b".")).startswith("250 2.0.0 Ok: queued as ")
    assert await raw.command(b"QUIT") == "221 Bye"
    assert gw.queued[0][0].rcpt_tos == ["x@example.com", "z@example.com"]


async def test_commands_pipelined_before_the_ehlo_reply_are_refused(gateway: MakeGateway) -> None:
    gw = await gateway()
    raw = await Raw.connect(gw.port)
    raw.writer.write(b"EHLO bot.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n")
    assert await raw.reply() == "554 5.5.1 Protocol error: pipelining not allowed here"
    assert await raw.closed()
    assert gw.checks() == ["pipelining"] and gw.queued == []
    await still_serving(gw)


async def test_bdat_is_not_implemented(gateway: MakeGateway) -> None:
    gw = await gateway()
    raw = await Raw.connect(gw.port)
    ehlo = await raw.command(b"EHLO client.test")
    assert "CHUNKING" not in ehlo
    assert (await raw.command(b"MAIL FROM:<a@example.org>")).startswith("250")
    assert (await raw.command(b"BDAT 10 LAST")).startswith("502 5.5.1")
    assert (await raw.command(b"RSET")).startswith("250")
    raw.close()


async def test_abuse_in_parallel_does_not_stop_good_clients(gateway: MakeGateway) -> None:
    gw = await gateway(max_errors=5, session_timeout_s=2.0)

    async def abuser(n: int) -> None:
        raw = await Raw.connect(gw.port, greet=False)
        raw.writer.write(os.urandom(2048) + b"\r\n" * 10)
        with contextlib.suppress(ConnectionError):
            await raw.writer.drain()
        await raw.closed()

    abusers = asyncio.gather(*(abuser(n) for n in range(30)))
    for _ in range(3):
        await still_serving(gw)
    await abusers


# --- property tests -------------------------------------------------------------------------------

_LINES = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda verb, arg: verb + b" " + arg,
              st.sampled_from([b"MAIL FROM:", b"RCPT TO:", b"HELO", b"EHLO", b"VRFY", b"DATA", b"BDAT", b"AUTH",
                               b"STARTTLS", b"NOOP", b"HELP", b"EXPN", b"RSET", b"mail from:", b"XCLIENT"]),
              st.binary(max_size=300)),
)


async def test_fuzzed_commands_never_break_the_server(gateway: MakeGateway) -> None:
    """Arbitrary command lines (hypothesis): every line gets a reply or the connection is closed cleanly,
    and the server goes on serving."""
    gw = await gateway(max_errors=1000)
    loop_errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    raw_holder: list[Raw] = []

    async def one(line: bytes) -> None:
        if not raw_holder:
            raw_holder.append(await Raw.connect(gw.port))
            await raw_holder[0].command(b"EHLO fuzz.test")
        raw = raw_holder[0]
        line = line.replace(b"\r", b"").replace(b"\n", b"")
        answer = await raw.command(line)
        if answer == "" or answer.startswith("421") or answer.startswith("221") or answer.startswith("354"):
            raw.close()
            raw_holder.clear()
            return
        assert answer[:3].isdigit() and answer[0] in "2345", (line, answer)

    examples: list[bytes] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_LINES)
    def collect(line: bytes) -> None:
        examples.append(line)

    collect()
    for line in examples:
        await one(line)
    if raw_holder:
        raw_holder[0].close()
    assert not loop_errors
    await still_serving(gw)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=400))
def test_address_parsers_never_raise(text: str) -> None:
    parts = RelayPolicy.split_address(text)
    assert parts is None or (parts[0] and parts[1] and "@" not in parts[1])
    address = normalise_address(text)
    assert address is None or (address.count("@") == 1 and not any(c.isspace() for c in address))


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=300))
def test_helo_checks_never_raise(text: str) -> None:
    checks = HostChecks(make_resolver(["127.0.0.1"], 1, 0.1), own_names=["mx.test"], own_ips=["127.0.0.1"],
                        helo_checks=True, helo_require_fqdn=True)
    refusal = checks.check_helo(text)
    assert refusal is None or refusal.code in (501, 504, 550)
