"""SMTP/LMTP client towards one downstream host (aiosmtplib), with one outcome per recipient.

One `deliver()` call is one SMTP session carrying several transactions (one per distinct
set of header changes); the session may be kept for the next call (connection reuse).
The relay's answers map to results like this:

- 2xx after DATA: DELIVERED;
- 4xx, no answer (connection refused, reset, timeout): DEFERRED, tried again later;
- 5xx to MAIL, RCPT or DATA: BOUNCED.

A failure of the session itself (connect, greeting, EHLO, STARTTLS) is about the relay, not
about the message, so it defers every recipient whatever the code: the mail is never bounced
because the relay is misconfigured or busy. Such outcomes are marked `session`, so that MX
delivery can try the next host.

TLS policy per destination: `none` (never STARTTLS), `may` (STARTTLS when offered, no certificate
check; a failed handshake is retried once in clear text, as opportunistic TLS means), `encrypt`
(STARTTLS required, no certificate check), `verify` (STARTTLS required, the chain against
`ca_file` (else the system store) and the host name `tls_name`).
With `protocol="lmtp"` the session greets with LHLO and DATA gets one reply per recipient.
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

from mailgw_libs.events import DeliveryStatus, Direction

from .lmtp import LmtpClient

log = logging.getLogger("mailgw.delivery.relay")

SESSIONS = Counter("mailgw_delivery_smtp_sessions_total", "SMTP sessions with the downstream relay", ["kind"])
SESSION_SECONDS = Histogram(
    "mailgw_delivery_smtp_session_seconds", "Duration of one SMTP session with the downstream relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

StartTls = Literal["off", "opportunistic", "required"]
TlsPolicy = Literal["none", "may", "encrypt", "verify"]
Protocol = Literal["smtp", "lmtp"]


def tls_policy_of(starttls: StartTls, verify: bool) -> TlsPolicy:
    """The policy of the older settings (relay_starttls, relay_tls_verify)."""
    if starttls == "off":
        return "none"
    if verify:
        return "verify"
    return "encrypt" if starttls == "required" else "may"


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
    direction: Direction = Direction.INBOUND  # for routing: outbound mail may go by MX


@dataclass(frozen=True)
class RecipientOutcome:
    recipient: str
    status: DeliveryStatus
    code: int
    response: str
    relay: str = ""  # host:port that gave the answer (or that could not be reached)
    session: bool = False  # the session failed (connect, greeting, EHLO, STARTTLS), not the transaction


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

    def __init__(self, code: int, response: str, tls: bool = False) -> None:
        super().__init__(f"{code} {response}".strip())
        self.code = code
        self.response = response
        self.tls = tls  # failed in the TLS handshake


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
                 max_idle: int = 4, tls: TlsPolicy | None = None, ca_file: str = "", tls_name: str = "",
                 protocol: Protocol = "smtp") -> None:
        self.host = host
        self.port = port
        self.helo_name = helo_name
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.tls: TlsPolicy = tls or tls_policy_of(starttls, tls_verify)
        self.ca_file = ca_file
        # The name the certificate must carry (an MX host name when `host` is its address).
        self.tls_name = tls_name or host
        self.protocol = protocol
        self.reuse_s = reuse_s
        self.reuse_messages = reuse_messages
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.tls != "verify":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _open(self) -> _Connection:
        try:
            return await self._connect(starttls=self.tls != "none")
        except _SessionFailed as failure:
            if self.tls != "may" or not failure.tls:
                raise
            # Opportunistic TLS: a broken handshake must not keep the mail from going out in clear.
            log.warning("STARTTLS failed; sending without TLS", extra={"relay": self.name, "error": str(failure)})
            return await self._connect(starttls=False)

    async def _connect(self, starttls: bool) -> _Connection:
        client_class = LmtpClient if self.protocol == "lmtp" else aiosmtplib.SMTP
        client = client_class(hostname=self.host, port=self.port, local_hostname=self.helo_name,
                              timeout=self.command_timeout_s, start_tls=False)
        in_tls = False
        try:
            await client.connect(timeout=self.connect_timeout_s)
            await client.ehlo()
            if starttls:
                if client.supports_extension("starttls"):
                    in_tls = True
                    await client.starttls(tls_context=self._tls_context(), server_hostname=self.tls_name)
                    in_tls = False
                    await client.ehlo()
                elif self.tls in ("encrypt", "verify"):
                    raise _SessionFailed(0, f"relay does not offer STARTTLS, which the TLS policy {self.tls} requires")
        except SMTPResponseException as exc:
            client.close()
            raise _SessionFailed(exc.code, exc.message, tls=in_tls) from exc
        except (SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            client.close()
            raise _SessionFailed(0, _describe(exc), tls=in_tls) from exc
        except _SessionFailed:
            client.close()
            raise
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
                results[index] += [RecipientOutcome(r, DeliveryStatus.DEFERRED, failure.code, failure.response,
                                                    self.name, session=True)
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
            out.extend(RecipientOutcome(r, status or status_for_code(code), code, response, self.name)
                       for r in recipients)

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
            if isinstance(client, LmtpClient):
                try:
                    replies = await client.lmtp_data(tx.message, len(accepted))
                except SMTPDataError as exc:
                    settle(accepted, exc.code, exc.message)
                    await client.rset()
                    return
                for recipient, reply in zip(accepted, replies, strict=True):
                    settle([recipient], reply.code, reply.message)
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
