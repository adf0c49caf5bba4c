"""SMTP client towards the downstream relay (aiosmtplib), with one outcome per recipient.

One `deliver()` call is one SMTP session carrying several transactions (one per distinct
set of header changes); the session may be kept for the next call (connection reuse).
The relay's answers map to results like this:

- 2xx after DATA: DELIVERED;
- 4xx, no answer (connection refused, reset, timeout): DEFERRED, tried again later;
- 5xx to MAIL, RCPT or DATA: BOUNCED.

A failure of the session itself (connect, greeting, EHLO, STARTTLS) is about the relay, not
about the message, so it defers every recipient whatever the code: the mail is never bounced
because the relay is misconfigured or busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)
from prometheus_client import Counter, Histogram

from mailgw_libs.events import DeliveryStatus

log = logging.getLogger("mailgw.delivery.relay")

SESSIONS = Counter("mailgw_delivery_smtp_sessions_total", "SMTP sessions with the downstream relay", ["kind"])
SESSION_SECONDS = Histogram(
    "mailgw_delivery_smtp_session_seconds", "Duration of one SMTP session with the downstream relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

StartTls = Literal["off", "opportunistic", "required"]


def status_for_code(code: int) -> DeliveryStatus:
    """The result of a recipient from the relay's reply code to MAIL, RCPT or DATA."""
    if 200 <= code < 300:
        return DeliveryStatus.DELIVERED
    if 500 <= code < 600:
        return DeliveryStatus.BOUNCED
    return DeliveryStatus.DEFERRED  # 4xx, or no answer at all (code 0), or nonsense


@dataclass(frozen=True)
class Transaction:
    """One message to send: MAIL FROM (`""` is the null sender), RCPT TOs, the bytes after DATA."""

    mail_from: str
    recipients: tuple[str, ...]
    message: bytes


@dataclass(frozen=True)
class RecipientOutcome:
    recipient: str
    status: DeliveryStatus
    code: int
    response: str


def valid_address(address: str, allow_empty: bool = False) -> bool:
    """Can the address go on an SMTP command line as is (no angle brackets, spaces, controls)?"""
    if not address:
        return allow_empty
    if len(address) > 512 or any(c in address for c in "<> \t\r\n") or not address.isprintable():
        return False
    return "@" in address


def _needs_smtputf8(tx: Transaction) -> bool:
    return not (tx.mail_from.isascii() and all(r.isascii() for r in tx.recipients))


class _SessionFailed(Exception):
    """The session with the relay is unusable; every recipient still open is deferred."""

    def __init__(self, code: int, response: str) -> None:
        super().__init__(f"{code} {response}".strip())
        self.code = code
        self.response = response


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    messages: int = 0
    idle_since: float = 0.0


class SmtpRelay:
    """Client of the downstream relay. Sessions are kept open between deliveries for `reuse_s`
    seconds (at most `reuse_messages` messages each); a kept session is probed with RSET before
    it carries mail again, and replaced by a new one if the relay closed it meanwhile."""

    def __init__(self, host: str, port: int, helo_name: str, connect_timeout_s: float = 30.0,
                 command_timeout_s: float = 60.0, starttls: StartTls = "opportunistic",
                 tls_verify: bool = False, reuse_s: float = 0.0, reuse_messages: int = 100,
                 max_idle: int = 4) -> None:
        self.host = host
        self.port = port
        self.helo_name = helo_name
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.starttls = starttls
        self.tls_verify = tls_verify
        self.reuse_s = reuse_s
        self.reuse_messages = reuse_messages
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _open(self) -> _Connection:
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, local_hostname=self.helo_name,
                                 timeout=self.command_timeout_s, start_tls=False)
        try:
            await client.connect(timeout=self.connect_timeout_s)
            await client.ehlo()
            if self.starttls != "off":
                if client.supports_extension("starttls"):
                    await client.starttls(tls_context=self._tls_context())
                    await client.ehlo()
                elif self.starttls == "required":
                    raise _SessionFailed(0, "relay does not offer STARTTLS, which is required")
        except SMTPResponseException as exc:
            client.close()
            raise _SessionFailed(exc.code, exc.message) from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise _SessionFailed(0, _describe(exc)) from exc
        except BaseException:
            client.close()
            raise
        SESSIONS.labels("opened").inc()
        return _Connection(client)

    async def _acquire(self) -> _Connection:
        """A kept session that still answers, or a new one (raises _SessionFailed)."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since > self.reuse_s or not conn.client.is_connected:
                await self._discard(conn, polite=conn.client.is_connected)
                continue
            try:
                await conn.client.rset()
            except (SMTPException, OSError, TimeoutError):
                await self._discard(conn, polite=False)
                continue
            SESSIONS.labels("reused").inc()
            return conn
        return await self._open()

    async def _release(self, conn: _Connection) -> None:
        keep = (self.reuse_s > 0 and conn.messages < self.reuse_messages and len(self._idle) < self.max_idle
                and conn.client.is_connected)
        if keep:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            await self._discard(conn, polite=True)

    async def _discard(self, conn: _Connection, polite: bool) -> None:
        if polite:
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await asyncio.wait_for(conn.client.quit(), timeout=min(self.command_timeout_s, 5.0))
        conn.client.close()

    async def close(self) -> None:
        """QUIT every kept session (at shutdown)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn, polite=True)

    async def deliver(self, transactions: Sequence[Transaction]) -> list[list[RecipientOutcome]]:
        """Send every transaction in one session: the outcomes, in the order of the transactions."""
        started = time.perf_counter()
        results: list[list[RecipientOutcome]] = [[] for _ in transactions]
        conn: _Connection | None = None
        try:
            conn = await self._acquire()
            for index, tx in enumerate(transactions):
                await self._send(conn.client, tx, results[index])
                conn.messages += 1
        except _SessionFailed as failure:
            for index, tx in enumerate(transactions):
                done = {o.recipient for o in results[index]}
                results[index] += [RecipientOutcome(r, DeliveryStatus.DEFERRED, failure.code, failure.response)
                                   for r in tx.recipients if r not in done]
            log.warning("relay session failed", extra={"relay": self.name, "error": str(failure)})
            if conn is not None:
                await self._discard(conn, polite=False)
        except BaseException:
            if conn is not None:
                await self._discard(conn, polite=False)
            raise
        else:
            await self._release(conn)
        finally:
            SESSION_SECONDS.observe(time.perf_counter() - started)
        return results

    async def _send(self, client: aiosmtplib.SMTP, tx: Transaction, out: list[RecipientOutcome]) -> None:
        """One transaction; appends an outcome per recipient or raises _SessionFailed."""
        def settle(recipients: Sequence[str], code: int, response: str,
                   status: DeliveryStatus | None = None) -> None:
            out.extend(RecipientOutcome(r, status or status_for_code(code), code, response) for r in recipients)

        if not valid_address(tx.mail_from, allow_empty=True):
            settle(tx.recipients, 0, "invalid sender address, not sent", DeliveryStatus.BOUNCED)
            return
        recipients = [r for r in tx.recipients if valid_address(r)]
        settle([r for r in tx.recipients if r not in recipients], 0, "invalid recipient address, not sent",
               DeliveryStatus.BOUNCED)
        if not recipients:
            return
        encoding = "ascii"
        options: list[str] = []
        if client.supports_extension("size"):
            options.append(f"SIZE={len(tx.message)}")
        if client.supports_extension("8bitmime") and not tx.message.isascii():
            options.append("BODY=8BITMIME")
        if _needs_smtputf8(tx):
            if not client.supports_extension("smtputf8"):
                settle(recipients, 0, "the relay does not support SMTPUTF8, which the addresses need",
                       DeliveryStatus.BOUNCED)
                return
            options.append("SMTPUTF8")
            encoding = "utf-8"
        try:
            try:
                await client.mail(tx.mail_from, options=options, encoding=encoding)
            except SMTPSenderRefused as exc:
                settle(recipients, exc.code, exc.message)
                await client.rset()
                return
            except ValueError as exc:  # aiosmtplib refuses to put the address on the wire: nothing was sent
                settle(recipients, 0, f"invalid sender address, not sent: {exc}", DeliveryStatus.BOUNCED)
                return
            accepted: list[str] = []
            for recipient in recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                    accepted.append(recipient)
                except SMTPRecipientRefused as exc:
                    settle([recipient], exc.code, exc.message)
                except ValueError as exc:
                    settle([recipient], 0, f"invalid recipient address, not sent: {exc}", DeliveryStatus.BOUNCED)
            if not accepted:
                await client.rset()
                return
            try:
                answer = await client.data(tx.message)
            except SMTPDataError as exc:
                settle(accepted, exc.code, exc.message)
                await client.rset()
                return
            settle(accepted, answer.code, answer.message)
        except SMTPResponseException as exc:  # e.g. RSET refused: the session is in an unknown state
            raise _SessionFailed(exc.code, exc.message) from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            raise _SessionFailed(0, _describe(exc)) from exc
