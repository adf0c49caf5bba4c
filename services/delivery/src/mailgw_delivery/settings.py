from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings

DEFAULT_RETRY_DELAYS_S = [60, 300, 1800, 7200, 21600]

TlsPolicy = Literal["none", "may", "encrypt", "verify"]


class Transport(BaseModel):
    """Where the mail of a domain goes (named like the central config's transports)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: str
    port: int = Field(default=25, ge=1, le=65535)
    protocol: Literal["smtp", "lmtp"] = "smtp"
    tls: TlsPolicy = "may"
    # Deliver to the MX hosts of `host` instead of to `host` itself.
    use_mx: bool = False


class DeliverySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_DELIVERY_", extra="ignore", populate_by_name=True)

    http_port: int = 9106

    # The downstream relay every accepted message goes to.
    relay_host: str = "127.0.0.1"
    relay_port: int = 25
    # Name sent in EHLO (never resolved through DNS at run time).
    helo_name: str = Field(default_factory=socket.gethostname)
    connect_timeout_s: float = 30.0
    command_timeout_s: float = 60.0
    # STARTTLS towards the relay: "opportunistic" upgrades when offered, "required" defers without it.
    relay_starttls: Literal["off", "opportunistic", "required"] = "opportunistic"
    # Verify the relay's certificate (off by default: opportunistic TLS to an internal relay).
    relay_tls_verify: bool = False
    # Keep the SMTP session open this long after a delivery for the next one (0: a session per action),
    # for at most this many messages.
    relay_reuse_s: float = 10.0
    relay_reuse_messages: int = 100
    # TLS policy towards the default relay; empty: from relay_starttls / relay_tls_verify.
    relay_tls: TlsPolicy | None = None

    # Routing. A recipient domain listed here goes to its transport, whatever the direction
    # (JSON: {"example.com": {"host": "10.0.0.5", "port": 24, "protocol": "lmtp", "tls": "none"}};
    # a key ".example.com" matches every subdomain). Other inbound mail goes to relay_host:relay_port;
    # other outbound mail to the smarthost when set, else by MX lookup.
    transports: dict[str, Transport] = Field(default_factory=dict)
    smarthost: Transport | None = None
    # TLS policy of MX deliveries, and per destination domain (overrides, also for the smarthost's mail).
    outbound_tls: TlsPolicy = "may"
    tls_policies: dict[str, TlsPolicy] = Field(default_factory=dict)
    # CA bundle for the "verify" policy (empty: the system store).
    tls_ca_file: str = ""
    # MX lookups use the shared resolver settings (MAILGW_DNS_NAMESERVERS, _PORT, _TIMEOUT).
    # The SMTP port of MX hosts (25; another one only for tests).
    mx_port: int = 25
    # MX hosts (and addresses) tried per delivery before the rest is deferred.
    mx_max_hosts: int = Field(default=5, ge=1)

    # Sender (From and MAIL FROM) of notifications the rules ask for.
    postmaster: str = "postmaster@localhost"

    # Wait before attempt n+1 after attempt n was deferred; the last delay repeats.
    retry_delays_s: list[int] = Field(default_factory=lambda: list(DEFAULT_RETRY_DELAYS_S))
    # A message still deferred this long after its first attempt bounces.
    queue_lifetime_s: int = 5 * 24 * 3600
    # A retry partition whose head is not due yet is paused until it is, but at most this long
    # before the head is fetched and checked again.
    retry_hold_max_s: float = 60.0

    # DSNs (RFC 3464) to the envelope sender on a permanent failure and when the queue lifetime is over;
    # never to the null sender, always sent from it.
    dsn_enabled: bool = True
    # Host name in Reporting-MTA and in the DSN's From (MAILER-DAEMON@...); empty: helo_name.
    dsn_reporting_mta: str = ""
    # A delay warning (Action: delayed) goes to the sender once, when a deferred message is this old (0: never).
    delay_warning_s: int = Field(default=4 * 3600, ge=0)

    # Ledger of (message id, recipient) pairs the relay has accepted: a redelivered action never sends twice.
    ledger_prefix: str = "mailgw:delivery:sent:"
    ledger_ttl_s: int = 6 * 24 * 3600

    @field_validator("retry_delays_s")
    @classmethod
    def _positive_delays(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("retry_delays_s needs at least one delay, all positive (seconds)")
        return value

    @property
    def relay(self) -> str:
        return f"{self.relay_host}:{self.relay_port}"
