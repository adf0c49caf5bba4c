"""LMTP (RFC 2033) on top of aiosmtplib, which speaks only SMTP.

LMTP differs from SMTP in two places: the greeting command is LHLO instead of EHLO (the reply lists
the same extensions), and after the message data the server answers once per accepted recipient, in
RCPT order, instead of once for the whole transaction. Everything else (MAIL, RCPT, RSET, QUIT,
STARTTLS, the dot-stuffing of the data) is the SMTP client's own.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPHeloError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.typing import Default, SMTPStatus


class LmtpClient(aiosmtplib.SMTP):
    """An aiosmtplib client that greets with LHLO and reads one reply per recipient after DATA."""

    async def ehlo(self, *, hostname: str | None = None,
                   timeout: float | Literal[Default.token] | None = Default.token) -> SMTPResponse:
        name = hostname or self.local_hostname or "localhost"
        response = await self.execute_command(b"LHLO", name.encode("ascii"), timeout=timeout)
        if response.code != SMTPStatus.completed:
            raise SMTPHeloError(response.code, response.message)
        self.last_ehlo_response = response  # parses the extensions like an EHLO reply
        return response

    async def helo(self, *, hostname: str | None = None,
                   timeout: float | Literal[Default.token] | None = Default.token) -> SMTPResponse:
        raise SMTPHeloError(500, "LMTP has no HELO fallback")

    async def lmtp_data(self, message: bytes, recipients: int,
                        timeout: float | None = None) -> list[SMTPResponse]:
        """DATA, the message, then `recipients` replies (one per accepted RCPT, in order).

        A refused DATA command raises SMTPDataError like SMTP; the per-recipient replies are returned
        as they came (2xx delivered, 4xx/5xx for that recipient only). aiosmtplib's protocol keeps one
        reply at a time and drops bytes that arrive while a reply waits to be picked up, so the replies
        after the data (often in one TCP segment) are read by a collector of our own instead."""
        protocol = self.protocol
        if protocol is None or not protocol.is_connected:
            raise SMTPServerDisconnected("Connection lost")
        data = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
        wait = self.timeout if timeout is None else timeout
        start = await self.execute_command(b"DATA", timeout=wait)
        if start.code != SMTPStatus.start_input:
            raise SMTPDataError(start.code, start.message)
        collector = ReplyCollector(recipients)
        original_received = protocol.data_received
        original_lost = protocol.connection_lost

        def lost(exc: Exception | None) -> None:
            collector.fail(SMTPServerDisconnected("Connection lost during LMTP DATA"))
            original_lost(exc)

        # Instance attributes shadow the methods: asyncio's transports look them up on every call.
        protocol.data_received = collector.feed  # type: ignore[method-assign]
        protocol.connection_lost = lost  # type: ignore[method-assign]
        try:
            protocol.write(data)
            return await collector.replies(wait)
        except (SMTPServerDisconnected, SMTPTimeoutError, SMTPResponseException):
            self.close()
            raise
        finally:
            protocol.data_received = original_received  # type: ignore[method-assign]
            protocol.connection_lost = original_lost  # type: ignore[method-assign]


class ReplyCollector:
    """Parses a stream of SMTP replies (`250-...` continuation lines, `250 ...` last line) until
    `expected` replies are complete."""

    def __init__(self, expected: int, max_bytes: int = 1 << 20) -> None:
        self.expected = expected
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.lines: list[bytes] = []
        self.done: list[SMTPResponse] = []
        self.error: Exception | None = None
        self.progress = asyncio.Event()

    def fail(self, error: Exception) -> None:
        self.error = self.error or error
        self.progress.set()

    def feed(self, data: bytes) -> None:
        self.buffer.extend(data)
        if len(self.buffer) > self.max_bytes:
            self.fail(SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long"))
            return
        while len(self.done) < self.expected:
            end = self.buffer.find(b"\n")
            if end == -1:
                break
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            if not line[:3].isdigit():
                self.fail(SMTPResponseException(SMTPStatus.invalid_response.value,
                                                f"Malformed LMTP reply line: {line[:80]!r}"))
                return
            self.lines.append(line)
            if line[3:4] != b"-":
                text = "\n".join(part[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")
                                 for part in self.lines)
                self.done.append(SMTPResponse(int(line[:3]), text))
                self.lines = []
        self.progress.set()

    async def replies(self, idle_timeout: float | None) -> list[SMTPResponse]:
        """The replies; raises when the server closes, garbles, or stays silent `idle_timeout` seconds."""
        while len(self.done) < self.expected:
            if self.error is not None:
                raise self.error
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), idle_timeout)
            except TimeoutError as exc:
                raise SMTPTimeoutError("Timed out waiting for the LMTP replies") from exc
        return self.done
