"""SMTP client towards the downstream relay (aiosmtplib), with one outcome per recipient.

One `deliver()` call is one SMTP session carrying several transactions (one per distinct
set of header changes). The relay's answers map to results like this:

- 2xx after DATA: DELIVERED;
- 4xx, no answer (connection refused, reset, timeout): DEFERRED, tried again later;
- 5xx to MAIL, RCPT or DATA: BOUNCED.

A failure of the session itself (connect, greeting, EHLO, STARTTLS) is about the relay, not
about the message, so it defers every recipient whatever the code: the mail is never bounced
because the relay is misconfigured or busy.
"""

from __future__ import annotations

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
from prometheus_client import Histogram

from mailgw_libs.events import DeliveryStatus

log = logging.getLogger("mailgw.delivery.relay")

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


class SmtpRelay:
    def __init__(self, host: str, port: int, helo_name: str, connect_timeout_s: float = 30.0,
                 command_timeout_s: float = 60.0, starttls: StartTls = "opportunistic",
                 tls_verify: bool = False) -> None:
        self.host = host
        self.port = port
        self.helo_name = helo_name
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.starttls = starttls
        self.tls_verify = tls_verify

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _open(self, client: aiosmtplib.SMTP) -> None:
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
            raise _SessionFailed(exc.code, exc.message) from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            raise _SessionFailed(0, _describe(exc)) from exc

    async def deliver(self, transactions: Sequence[Transaction]) -> list[list[RecipientOutcome]]:
        """Send every transaction in one session: the outcomes, in the order of the transactions."""
        started = time.perf_counter()
        results: list[list[RecipientOutcome]] = [[] for _ in transactions]
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, local_hostname=self.helo_name,
                                 timeout=self.command_timeout_s, start_tls=False)
        try:
            try:
                await self._open(client)
                for index, tx in enumerate(transactions):
                    await self._send(client, tx, results[index])
            except _SessionFailed as failure:
                for index, tx in enumerate(transactions):
                    done = {o.recipient for o in results[index]}
                    results[index] += [RecipientOutcome(r, DeliveryStatus.DEFERRED, failure.code, failure.response)
                                       for r in tx.recipients if r not in done]
                log.warning("relay session failed", extra={"relay": self.name, "error": str(failure)})
            else:
                with contextlib.suppress(SMTPException, OSError, TimeoutError):
                    await client.quit()
        finally:
            client.close()
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
