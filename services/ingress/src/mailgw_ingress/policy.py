"""`SmtpPolicy`: every policy value an SMTP session reads, prepared as one immutable object.

The handler holds the policy in force and replaces it as a whole when the configuration changes (never field
by field, so no session sees half of a change). A session takes the policy in force when it connects (the
connection checks, the banner, HELO) and again at each MAIL FROM: one transaction is judged by one policy from
MAIL FROM to the end of DATA, and a long session (a trusted client sending many messages) picks up a change at
its next message instead of keeping an old relay or greylisting setting for its whole life.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .access import AccessList
from .dnsbl import ConnectionDnsbl
from .greylist import GreylistPolicy
from .hostchecks import HostChecks
from .ratelimit import RateLimiter
from .recipients import RecipientVerifier
from .relay import RelayPolicy
from .spfcheck import SpfChecker


@dataclass(frozen=True)
class SmtpPolicy:
    # Relay control comes first at RCPT and nothing below can override it.
    relay: RelayPolicy
    max_recipients: int
    # Never above the listener's size limit (the environment's MAILGW_MAX_MESSAGE_BYTES): the configuration can
    # only lower it.
    max_message_bytes: int
    welcomelist: AccessList = field(default_factory=AccessList)
    blocklist: AccessList = field(default_factory=AccessList)
    greylist: GreylistPolicy | None = None
    rates: RateLimiter | None = None
    max_connections_per_ip: int = 0
    messages_per_minute_per_ip: int = 0
    messages_per_minute_per_sender: int = 0
    tls_required_sender_domains: frozenset[str] = frozenset()
    dnsbl: ConnectionDnsbl | None = None
    hostchecks: HostChecks | None = None
    spf: SpfChecker | None = None
    spf_reject_fail: bool = True
    greylist_spf_pass_bypass: bool = False
    recipients: RecipientVerifier | None = None
    # Answer to an unknown recipient: 550 (permanent) or 450 (e.g. while a directory is being filled).
    unknown_recipient_code: int = 550
    before_queue: bool = False
    before_queue_deadline_s: float = 30.0
    reject_pipelined_greeting: bool = True
    # None: the listener's own setting (start_smtp_server's arguments).
    max_errors: int | None = None
    pregreet_delay_s: float | None = None

    @property
    def has_connection_lookups(self) -> bool:
        return self.dnsbl is not None or self.hostchecks is not None

    @property
    def uses_redis(self) -> bool:
        return self.greylist is not None or self.rates is not None or self.dnsbl is not None \
            or self.recipients is not None
