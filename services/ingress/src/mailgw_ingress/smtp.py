"""The SMTP server: aiosmtpd's protocol with the gateway's policy and answers.

`IngressHandler` implements the aiosmtpd handler hooks. The 250 answer to DATA is
given only after Kafka acknowledged the message (acks=all); when the bus does not
acknowledge in time the answer is 451 and the sender keeps the message.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import Counter, Histogram

from mailgw_libs import mime
from mailgw_libs.events import MailReceived, SmtpEvent, TlsInfo, new_message_id, utcnow

from .relay import RelayPolicy

log = logging.getLogger("mailgw.ingress.smtp")

SMTP_REPLIES = Counter("mailgw_ingress_smtp_replies_total", "SMTP replies by command and code", ["command", "code"])
QUEUE_LATENCY = Histogram("mailgw_ingress_queue_seconds", "Time from end of DATA to the broker's acknowledgement")

# aiosmtpd's own answers, rewritten with RFC 3463 enhanced status codes.
_ENHANCED = {
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed limit",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message size exceeds fixed limit",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "501 Syntax: HELO hostname": "501 5.5.4 Syntax: HELO hostname",
    "501 Syntax: EHLO hostname": "501 5.5.4 Syntax: EHLO hostname",
}

Publisher = Callable[[MailReceived, bytes], Awaitable[None]]
EventSink = Callable[[SmtpEvent], None]


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with enhanced status codes and a configurable line limit."""

    def __init__(self, handler: Any, *, max_line_bytes: int, **kwargs: Any) -> None:
        # aiosmtpd sizes its stream reader from this class attribute.
        self.line_length_limit = max_line_bytes
        super().__init__(handler, **kwargs)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")  # type: ignore[assignment]
        text = _ENHANCED.get(str(status), str(status))
        SMTP_REPLIES.labels(self._current_command(), text[:3]).inc()
        await super().push(text)

    def _current_command(self) -> str:
        return "DATA" if getattr(self, "_in_data", False) else "SMTP"


class IngressHandler:
    def __init__(self, policy: RelayPolicy, publish: Publisher, on_event: EventSink, hostname: str,
                 max_recipients: int, max_message_bytes: int) -> None:
        self.policy = policy
        self.publish = publish
        self.on_event = on_event
        self.hostname = hostname
        self.max_recipients = max_recipients
        self.max_message_bytes = max_message_bytes

    def _refuse(self, session: Session, envelope: Envelope, code: int, reason: str, check: str,
                rcpt: str = "") -> None:
        self.on_event(SmtpEvent(
            at=utcnow(), client_ip=_peer_ip(session), helo=session.host_name or "",
            mail_from=envelope.mail_from or "", rcpt=rcpt, reason=reason, check=check, code=code,
        ))

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            self._refuse(session, envelope, 452, "too many recipients", "max_recipients", address)
            return "452 4.5.3 Too many recipients"
        decision = self.policy.check_recipient(_peer_ip(session), address)
        if not decision.allowed:
            self._refuse(session, envelope, 554, decision.reason, "relay", address)
            return f"554 5.7.1 <{address}>: {decision.reason}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if len(raw) > self.max_message_bytes:
            self._refuse(session, envelope, 552, "message too big", "size")
            return "552 5.3.4 Message size exceeds fixed limit"
        message_id = new_message_id()
        received_at = utcnow()
        client_ip = _peer_ip(session)
        tls = _tls_info(session)
        direction = self.policy.direction(client_ip)
        stamped = self.received_header(session, envelope, message_id, received_at, tls) + raw
        headers = mime.parse_headers_only(raw)
        event = MailReceived(
            message_id=message_id, received_at=received_at, client_ip=client_ip,
            client_helo=session.host_name or "", mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos), direction=direction, size=len(stamped), tls=tls,
            rfc_message_id=mime.decoded_header(headers, "Message-ID")[:998],
            subject=mime.decoded_header(headers, "Subject")[:998],
            header_from=mime.decoded_header(headers, "From")[:998],
        )
        started = asyncio.get_running_loop().time()
        try:
            await self.publish(event, stamped)
        except Exception as exc:  # noqa: BLE001 - any bus failure means "not queued": the sender retries
            log.warning("message not queued: bus unavailable", extra={"error": repr(exc), "client_ip": client_ip})
            self._refuse(session, envelope, 451, "bus unavailable", "queue")
            return "451 4.3.0 Temporary failure, message not queued: please retry"
        QUEUE_LATENCY.observe(asyncio.get_running_loop().time() - started)
        log.info("queued", extra={"message_id": message_id, "client_ip": client_ip, "size": len(stamped),
                                   "rcpts": len(envelope.rcpt_tos), "direction": str(direction)})
        return f"250 2.0.0 Ok: queued as {message_id}"

    def received_header(self, session: Session, envelope: Envelope, message_id: str, at: datetime,
                        tls: TlsInfo | None) -> bytes:
        helo = _clean(session.host_name or "unknown")
        ip = _peer_ip(session)
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if tls:
            protocol += "S"
        tls_part = f"\r\n\t(using {tls.version} with cipher {tls.cipher})" if tls else ""
        rcpt = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else ""
        for_part = f"\r\n\tfor <{_clean(rcpt)}>" if rcpt else ""
        line = (f"Received: from {helo} ([{ip}]){tls_part}\r\n\tby {self.hostname} (mailgw) with {protocol} "
                f"id {message_id}{for_part};\r\n\t{format_datetime(at.astimezone(UTC))}\r\n")
        return line.encode("utf-8", "replace")


def _clean(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in "\r\n()")[:255]


def _peer_ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _tls_info(session: Session) -> TlsInfo | None:
    ssl = session.ssl
    if not ssl:
        return None
    cipher = ssl.get("cipher")
    if isinstance(cipher, tuple) and len(cipher) >= 2:
        return TlsInfo(version=str(cipher[1]), cipher=str(cipher[0]))
    return None


async def start_smtp_server(handler: IngressHandler, host: str, port: int, max_message_bytes: int,
                            max_line_bytes: int, session_timeout_s: float) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(handler, max_line_bytes=max_line_bytes, data_size_limit=max_message_bytes,
                           enable_SMTPUTF8=True, hostname=handler.hostname, ident="mailgw ESMTP",
                           timeout=session_timeout_s, loop=loop)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return await loop.create_server(factory, host=host, port=port, family=family, reuse_address=True)
