"""The SMTP server: aiosmtpd's protocol with the gateway's policy and answers.

`IngressHandler` implements the aiosmtpd handler hooks. The 250 answer to DATA is
given only after Kafka acknowledged the message (acks=all); when the bus does not
acknowledge in time the answer is 451 and the sender keeps the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import Counter, Gauge, Histogram

from mailgw_libs import mime
from mailgw_libs.events import MailReceived, SmtpEvent, TlsInfo, new_message_id, utcnow

from .access import AccessList
from .beforequeue import ActionWaiter, all_blocked
from .dnsbl import ConnectionDnsbl, DnsblDecision
from .greylist import GREYLISTED_REPLY, GreylistPolicy
from .hostchecks import DnsTrouble, HostChecks, Refusal
from .policy import SmtpPolicy
from .ratelimit import RateLimiter
from .recipients import Known, RecipientVerifier
from .relay import RelayPolicy, normalise_domain
from .spfcheck import SpfChecker, SpfOutcome

log = logging.getLogger("mailgw.ingress.smtp")

SMTP_REPLIES = Counter("mailgw_ingress_smtp_replies_total", "SMTP replies by command and code", ["command", "code"])
QUEUE_LATENCY = Histogram("mailgw_ingress_queue_seconds", "Time from end of DATA to the broker's acknowledgement")
REFUSALS = Counter("mailgw_ingress_refusals_total", "SMTP refusals by check", ["check"])
BEFORE_QUEUE = Counter("mailgw_ingress_before_queue_total", "Before-queue outcomes", ["outcome"])
OPEN_CONNECTIONS = Gauge("mailgw_ingress_smtp_connections", "Open SMTP connections")

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

_BOGUS_GOODBYE = "502 5.5.1 Too many unrecognized commands"

Publisher = Callable[[MailReceived, bytes], Awaitable[None]]
EventSink = Callable[[SmtpEvent], None]


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with enhanced status codes, a configurable line limit and the connection checks.

    Connection checks (before the banner): client blocklist, connections per client IP, early talkers.
    During the session: a DATA timeout of its own and a disconnect after `max_errors` error replies.
    """

    def __init__(self, handler: IngressHandler, *, max_line_bytes: int, data_timeout_s: float = 600.0,
                 max_errors: int = 20, pregreet_delay_s: float = 0.0, **kwargs: Any) -> None:
        # aiosmtpd sizes its stream reader from this class attribute.
        self.line_length_limit = max_line_bytes
        super().__init__(handler, **kwargs)
        self.gateway = handler
        # The policy this session is judged by: the one in force at connection, renewed at each MAIL FROM.
        self.policy = handler.current
        self.data_timeout_s = data_timeout_s
        self.max_errors = max_errors if self.policy.max_errors is None else self.policy.max_errors
        self.pregreet_delay_s = pregreet_delay_s if self.policy.pregreet_delay_s is None \
            else self.policy.pregreet_delay_s
        # The configuration can lower the listener's size limit (advertised in EHLO SIZE), never raise it.
        self.data_size_limit = min(self.data_size_limit or self.policy.max_message_bytes,
                                   self.policy.max_message_bytes)
        self.errors = 0
        self.client_ip = ""
        # Results of the connection-time lookups and of the current transaction's SPF check.
        self.dnsbl: DnsblDecision | None = None
        self.rdns: tuple[str, bool] | None = None  # (PTR name, forward-confirmed); None: lookup failed
        self.spf: SpfOutcome | None = None
        self._counted = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS: count the connection only once.
        if self._original_transport is None and not self._counted:
            peer = transport.get_extra_info("peername")
            self.client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
            self.gateway.connection_opened(self.client_ip)
            self._counted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.gateway.connection_closed(self.client_ip)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        refusal = self.gateway.connect_refusal(self)
        lookups: asyncio.Task[str | None] | None = None
        if refusal is None and self.policy.has_connection_lookups:
            # DNS lists and reverse DNS run while the pregreet test waits (postscreen does the same).
            lookups = asyncio.ensure_future(self.gateway.connection_lookups(self))
        if refusal is None and self.pregreet_delay_s > 0:
            # postscreen-style pregreet test: a well-behaved client waits for the banner.
            await asyncio.sleep(self.pregreet_delay_s)
            if self._reader._buffer or self._reader.at_eof():  # type: ignore[attr-defined]
                refusal = self.gateway.refuse_connection(self, 554, "client sent data before the greeting",
                                                         "early_talker", "554 5.5.1 Protocol error: talked too early")
        if lookups is not None:
            if refusal is None:
                try:
                    refusal = await lookups
                except Exception:  # a broken lookup must not drop the client: the checks fail open
                    log.exception("connection lookups failed", extra={"client_ip": self.client_ip})
            else:
                lookups.cancel()
        if refusal is not None:
            await self._close_with(refusal)
            return
        await super()._handle_client()

    async def _close_with(self, reply: str) -> None:
        self._closing = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    async def smtp_HELO(self, hostname: str) -> None:
        if await self._talked_over_greeting("HELO"):
            return
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if await self._talked_over_greeting("EHLO"):
            return
        await super().smtp_EHLO(hostname)

    async def _talked_over_greeting(self, command: str) -> bool:
        """RFC 2920: a client waits for the HELO/EHLO reply; one that sends more commands first is a bot."""
        if not self.policy.reject_pipelined_greeting or not self._reader._buffer:  # type: ignore[attr-defined]
            return False
        reply = self.gateway.refuse_connection(self, 554, f"commands pipelined before the {command} reply",
                                               "pipelining", "554 5.5.1 Protocol error: pipelining not allowed here")
        await self._close_with(reply)
        return True

    async def smtp_BDAT(self, arg: str) -> None:
        # CHUNKING is not offered: say so clearly instead of aiosmtpd's generic "not recognized".
        await self.push("502 5.5.1 Error: BDAT not implemented (CHUNKING is not offered)")

    def _timeout_cb(self) -> None:
        # aiosmtpd closes silently; say why (Postfix: "421 4.4.2 Error: timeout exceeded") and record it.
        if self.transport is not None and not self._closing and self.session is not None:
            self._closing = True
            self.gateway.refuse_connection(self, 421, "timeout exceeded", "timeout", "")
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.transport.write(b"421 4.4.2 Error: timeout exceeded\r\n")  # type: ignore[attr-defined]
        super()._timeout_cb()

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's timeout covers one whole command: give DATA (transfer included) its own.
        self._reset_timeout(self.data_timeout_s)
        await super().smtp_DATA(arg)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")  # type: ignore[assignment]
        text = _ENHANCED.get(str(status), str(status))
        SMTP_REPLIES.labels(self._current_command(), text[:3]).inc()
        await super().push(text)
        if text.startswith(_BOGUS_GOODBYE) and not self._closing:
            # aiosmtpd's own disconnect after repeated unknown commands: recorded like our refusals.
            self._closing = True
            self.gateway.refuse_connection(self, 502, "too many unrecognized commands", "bogus_commands", "")
            return
        # Greylisting answers are policy, not client errors: a first message to many recipients is not cut off.
        if (self._closing or self.max_errors <= 0 or text[:1] not in "45" or text.startswith("421")
                or text == GREYLISTED_REPLY):
            return
        self.errors += 1
        if self.errors >= self.max_errors:
            self.gateway.refuse_connection(self, 421, f"too many errors ({self.errors})", "max_errors", "")
            await self._close_with("421 4.7.0 Too many errors")

    def _current_command(self) -> str:
        return "DATA" if getattr(self, "_in_data", False) else "SMTP"


class IngressHandler:
    """The gateway's answers to SMTP commands, under the `SmtpPolicy` in force (`current`, swapped by `replace`).

    The keyword arguments build the first policy (tests, benchmarks); the service replaces it from the
    environment and the central configuration."""

    def __init__(self, policy: RelayPolicy, publish: Publisher, on_event: EventSink, hostname: str,
                 max_recipients: int, max_message_bytes: int, *, welcomelist: AccessList | None = None,
                 blocklist: AccessList | None = None, greylist: GreylistPolicy | None = None,
                 rates: RateLimiter | None = None, max_connections_per_ip: int = 0,
                 messages_per_minute_per_ip: int = 0, messages_per_minute_per_sender: int = 0,
                 tls_required_sender_domains: list[str] | None = None, dnsbl: ConnectionDnsbl | None = None,
                 hostchecks: HostChecks | None = None, spf: SpfChecker | None = None, spf_reject_fail: bool = True,
                 greylist_spf_pass_bypass: bool = False, recipients: RecipientVerifier | None = None,
                 actions: ActionWaiter | None = None, before_queue_deadline_s: float = 30.0,
                 reject_pipelined_greeting: bool = True) -> None:
        self.publish = publish
        self.on_event = on_event
        self.hostname = hostname
        self.connections: dict[str, int] = {}
        # The reader of mail.actions (infrastructure, not policy): used when the policy says before-queue.
        self.actions = actions
        self.current = SmtpPolicy(
            relay=policy, max_recipients=max_recipients, max_message_bytes=max_message_bytes,
            welcomelist=welcomelist or AccessList(), blocklist=blocklist or AccessList(), greylist=greylist,
            rates=rates, max_connections_per_ip=max_connections_per_ip,
            messages_per_minute_per_ip=messages_per_minute_per_ip,
            messages_per_minute_per_sender=messages_per_minute_per_sender,
            tls_required_sender_domains=frozenset(normalise_domain(d) for d in tls_required_sender_domains or []),
            dnsbl=dnsbl, hostchecks=hostchecks, spf=spf, spf_reject_fail=spf_reject_fail,
            greylist_spf_pass_bypass=greylist_spf_pass_bypass, recipients=recipients,
            before_queue=actions is not None, before_queue_deadline_s=before_queue_deadline_s,
            reject_pipelined_greeting=reject_pipelined_greeting)

    def replace(self, policy: SmtpPolicy) -> None:
        """Put `policy` in force at once: new connections and the next transaction of open sessions use it."""
        self.current = policy

    def policy_of(self, server: SMTP) -> SmtpPolicy:
        """The policy a session is judged by (the one in force for a server that is not a GatewaySMTP)."""
        return server.policy if isinstance(server, GatewaySMTP) else self.current

    def _refuse(self, session: Session, envelope: Envelope, code: int, reason: str, check: str,
                rcpt: str = "", sender: str | None = None) -> None:
        REFUSALS.labels(check).inc()
        self.on_event(SmtpEvent(
            at=utcnow(), client_ip=_peer_ip(session), helo=session.host_name or "",
            mail_from=sender if sender is not None else envelope.mail_from or "", rcpt=rcpt, reason=reason,
            check=check, code=code,
        ))

    # --- connection stage -------------------------------------------------------------------------

    def connection_opened(self, client_ip: str) -> None:
        self.connections[client_ip] = self.connections.get(client_ip, 0) + 1
        OPEN_CONNECTIONS.inc()

    def connection_closed(self, client_ip: str) -> None:
        left = self.connections.get(client_ip, 0) - 1
        if left > 0:
            self.connections[client_ip] = left
        else:
            self.connections.pop(client_ip, None)
        OPEN_CONNECTIONS.dec()

    @staticmethod
    def exempt(p: SmtpPolicy, client_ip: str, sender: str | None = None) -> bool:
        """Welcomelisted or trusted clients skip greylisting and the rate limits."""
        return p.relay.is_trusted(client_ip) or p.welcomelist.listed(client_ip, sender)

    def refuse_connection(self, server: SMTP, code: int, reason: str, check: str, reply: str) -> str:
        assert server.session is not None and server.envelope is not None
        self._refuse(server.session, server.envelope, code, reason, check)
        return reply

    def connect_refusal(self, server: SMTP) -> str | None:
        """The reply that ends a new connection before the banner, or None to go on."""
        assert server.session is not None
        p = self.policy_of(server)
        ip = _peer_ip(server.session)
        if p.blocklist.client_listed(ip) and not p.welcomelist.client_listed(ip):
            return self.refuse_connection(server, 554, "client blocklisted", "blocklist",
                                          "554 5.7.1 Client host rejected: blocklisted")
        if (p.max_connections_per_ip > 0 and self.connections.get(ip, 0) > p.max_connections_per_ip
                and not self.exempt(p, ip)):
            return self.refuse_connection(server, 421, "too many connections", "max_connections",
                                          "421 4.7.0 Too many connections from your IP, try again later")
        return None

    async def connection_lookups(self, server: GatewaySMTP) -> str | None:
        """DNS lists and reverse DNS of a new client; the reply that refuses it, or None."""
        ip = server.client_ip
        p = server.policy
        exempt = self.exempt(p, ip)

        async def reverse() -> None:
            if p.hostchecks is None:
                return
            try:
                server.rdns = await p.hostchecks.reverse_name(ip)
            except DnsTrouble:
                server.rdns = None

        async def lists() -> None:
            if p.dnsbl is not None and not exempt:
                server.dnsbl = await p.dnsbl.decide(ip)

        await asyncio.gather(reverse(), lists())
        decision = server.dnsbl
        if decision is not None and decision.refused:
            return self.refuse_connection(server, int(decision.reply[:3]), decision.reason, "dnsbl", decision.reply)
        return None

    async def sender_refusal(self, server: SMTP, session: Session, sender: str) -> Refusal | None:
        """HELO, reverse DNS, sender domain and SPF checks of a transaction (untrusted clients only)."""
        gateway = server if isinstance(server, GatewaySMTP) else None
        p = self.policy_of(server)
        helo = session.host_name or ""
        ip = _peer_ip(session)
        sender = "" if sender == "<>" else sender  # aiosmtpd hands the null sender over as "<>"
        if p.hostchecks is not None:
            refusal = p.hostchecks.check_helo(helo)
            if refusal is None and gateway is not None:
                refusal = p.hostchecks.check_rdns(ip, gateway.rdns)
            if refusal is None:
                refusal = await p.hostchecks.check_sender_domain(sender)
            if refusal is not None:
                return refusal
        if p.spf is not None and gateway is not None:
            outcome = await p.spf.check(ip, sender, helo)
            gateway.spf = outcome
            if outcome.result == "fail" and p.spf_reject_fail:
                who = f"<{sender}>" if sender else f"HELO {helo}"
                return Refusal(550, f"550 5.7.23 {_printable(who)}: Sender address rejected: SPF fail - "
                                    f"not authorized by {_printable(outcome.domain)}",
                               f"SPF fail ({outcome.domain})", "spf")
        return None

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # aiosmtpd reads commands line by line from its buffer, so pipelined commands are handled: say so.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", *responses[-1:]]

    # --- MAIL FROM --------------------------------------------------------------------------------

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if isinstance(server, GatewaySMTP):
            server.policy = self.current  # a new transaction: the policy in force now judges it to its end
        p = self.policy_of(server)
        ip = _peer_ip(session)
        if p.blocklist.sender_listed(address) and not p.welcomelist.listed(ip, address):
            self._refuse(session, envelope, 554, "sender blocklisted", "blocklist")
            return f"554 5.7.1 <{address}>: Sender address rejected: blocklisted"
        if p.tls_required_sender_domains and not session.ssl:
            domain = normalise_domain(address.rpartition("@")[2])
            if domain in p.tls_required_sender_domains:
                self._refuse(session, envelope, 530, f"TLS required for sender domain {domain}", "tls_required")
                return "530 5.7.0 Must issue a STARTTLS command first"
        if isinstance(server, GatewaySMTP):
            server.spf = None
        if not self.exempt(p, ip, address):
            refusal = await self.sender_refusal(server, session, address)
            if refusal is not None:
                self._refuse(session, envelope, refusal.code, refusal.reason, refusal.check, sender=address)
                return refusal.reply
        if p.rates is not None and not self.exempt(p, ip, address):
            counters = {"client": (ip, p.messages_per_minute_per_ip)}
            if address and address != "<>":  # bounces (null sender, "<>" from aiosmtpd) come from everywhere: no counter
                counters["sender"] = (address, p.messages_per_minute_per_sender)
            over = await p.rates.hit(counters)
            if over is not None:
                envelope.mail_from = address  # so that the event names the sender
                self._refuse(session, envelope, 451, f"message rate limit per {over} exceeded", "rate")
                envelope.mail_from = None
                return "451 4.7.1 Rate limit exceeded, please try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    # --- RCPT TO ----------------------------------------------------------------------------------

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        p = self.policy_of(server)
        if len(envelope.rcpt_tos) >= p.max_recipients:
            self._refuse(session, envelope, 452, "too many recipients", "max_recipients", address)
            return "452 4.5.3 Too many recipients"
        ip = _peer_ip(session)
        decision = p.relay.check_recipient(ip, address)
        if not decision.allowed:
            self._refuse(session, envelope, 554, decision.reason, "relay", address)
            return f"554 5.7.1 <{address}>: {decision.reason}"
        if p.recipients is not None and self._is_local(p, address):
            known, source = await p.recipients.verify(address)
            if known is Known.UNKNOWN:
                code = p.unknown_recipient_code
                self._refuse(session, envelope, code, f"unknown recipient ({source})", "recipient", address)
                return f"{code} {code // 100}.1.1 <{address}>: Recipient address rejected: User unknown"
            if known is Known.TEMPFAIL:
                self._refuse(session, envelope, 451, f"recipient verification unavailable ({source})", "recipient",
                             address)
                return f"451 4.3.0 <{address}>: Recipient address verification temporarily unavailable"
        if p.greylist is not None and not self.exempt(p, ip, envelope.mail_from) \
                and not self._greylist_bypass(p, server):
            grey = await p.greylist.check(ip, envelope.mail_from or "", address)
            if not grey.allowed:
                self._refuse(session, envelope, 451, f"greylisted ({grey.state})", "greylist", address)
                return GREYLISTED_REPLY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    @staticmethod
    def _is_local(p: SmtpPolicy, address: str) -> bool:
        parts = p.relay.split_address(address)
        return parts is not None and parts[1] in p.relay.relay_domains

    @staticmethod
    def _greylist_bypass(p: SmtpPolicy, server: SMTP) -> bool:
        if not isinstance(server, GatewaySMTP):
            return False
        if server.dnsbl is not None and server.dnsbl.allowlisted:
            return True  # a DNS allowlist vouches for the client (postscreen's dnsbl allowlisting)
        return p.greylist_spf_pass_bypass and server.spf is not None and server.spf.result == "pass"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        p = self.policy_of(server)
        raw = envelope.original_content or b""
        if len(raw) > p.max_message_bytes:
            self._refuse(session, envelope, 552, "message too big", "size")
            return "552 5.3.4 Message size exceeds fixed limit"
        message_id = new_message_id()
        received_at = utcnow()
        client_ip = _peer_ip(session)
        tls = _tls_info(session)
        direction = p.relay.direction(client_ip)
        gateway = server if isinstance(server, GatewaySMTP) else None
        spf = gateway.spf if gateway is not None else None
        rdns = gateway.rdns[0] if gateway is not None and gateway.rdns is not None else ""
        trace = b""
        if spf is not None:
            trace = spf.received_spf(self.hostname, client_ip, (envelope.mail_from or "").removeprefix("<>"),
                                     session.host_name or "").encode("utf-8", "replace")
        stamped = trace + self.received_header(session, envelope, message_id, received_at, tls) + raw
        headers = mime.parse_headers_only(raw)
        event = MailReceived(
            message_id=message_id, received_at=received_at, client_ip=client_ip,
            client_helo=session.host_name or "", mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos), direction=direction, size=len(stamped), tls=tls,
            rfc_message_id=mime.decoded_header(headers, "Message-ID")[:998],
            subject=mime.decoded_header(headers, "Subject")[:998],
            header_from=mime.decoded_header(headers, "From")[:998],
            spf=spf.result if spf is not None else "", spf_domain=spf.domain if spf is not None else "",
            client_rdns=rdns,
        )
        started = asyncio.get_running_loop().time()
        actions = self.actions if p.before_queue else None
        decision = actions.expect(message_id) if actions is not None else None
        try:
            await self.publish(event, stamped)
        except Exception as exc:  # noqa: BLE001 - any bus failure means "not queued": the sender retries
            if actions is not None:
                actions.forget(message_id)
            log.warning("message not queued: bus unavailable", extra={"error": repr(exc), "client_ip": client_ip})
            self._refuse(session, envelope, 451, "bus unavailable", "queue")
            return "451 4.3.0 Temporary failure, message not queued: please retry"
        QUEUE_LATENCY.observe(asyncio.get_running_loop().time() - started)
        if actions is not None and decision is not None:
            action = await actions.wait(message_id, decision, p.before_queue_deadline_s)
            BEFORE_QUEUE.labels("deadline" if action is None else "blocked" if all_blocked(action) else "accepted").inc()
            if action is None:
                log.warning("before-queue deadline: accepted after-queue", extra={"message_id": message_id})
            elif all_blocked(action):
                self._refuse(session, envelope, 550, "blocked by the rules before queueing", "before_queue")
                return f"550 5.7.1 Message rejected by content policy (id {message_id})"
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


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in "\r\n")[:256]


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


def make_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server context for STARTTLS (blocking file reads: call it off the event loop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def start_smtp_server(handler: IngressHandler, host: str, port: int, max_message_bytes: int,
                            max_line_bytes: int, session_timeout_s: float, *, data_timeout_s: float = 600.0,
                            max_errors: int = 20, pregreet_delay_s: float = 0.0,
                            tls_context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(handler, max_line_bytes=max_line_bytes, data_timeout_s=data_timeout_s,
                           max_errors=max_errors, pregreet_delay_s=pregreet_delay_s,
                           data_size_limit=max_message_bytes, enable_SMTPUTF8=True, hostname=handler.hostname,
                           ident="mailgw ESMTP", timeout=session_timeout_s, tls_context=tls_context, loop=loop)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return await loop.create_server(factory, host=host, port=port, family=family, reuse_address=True)
