from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_INGRESS_", extra="ignore", populate_by_name=True)

    http_port: int = 9101
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    # Name in the banner and in the Received header.
    hostname: str = "mailgw.localdomain"
    # Mail for these domains is accepted from anywhere (inbound).
    relay_domains: list[str] = Field(default_factory=lambda: ["example.com"])
    # Clients in these networks may relay to any domain (outbound).
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    max_recipients: int = 100
    # Longest line accepted in DATA (RFC 5321 says 1000, real mailers send longer ones).
    max_line_bytes: int = 65_536
    # Command timeout: the time a client has to send one complete SMTP command, seconds (Postfix smtpd_timeout).
    session_timeout_s: float = 300.0
    # Time a client has for the whole DATA transfer, seconds (RFC 5321 4.5.3.2.6: 10 minutes).
    data_timeout_s: float = 600.0

    # Greylisting (Redis at MAILGW_REDIS_URL). On in production like PMG; `make run` turns it off.
    greylisting: bool = True
    greylist_delay_s: float = 180.0
    greylist_retry_window_s: float = 2 * 86400.0
    greylist_whitelist_s: float = 36 * 86400.0
    # Prefix of every Redis key of this service (greylisting, rate counters).
    redis_prefix: str = "mailgw:ingress:"
    # Timeout of one Redis call on the SMTP path; past it the check fails open.
    redis_timeout_s: float = 0.5

    # SMTP welcomelist / blocklist: IPs, networks, sender addresses, sender domains (`.domain` = and subdomains).
    welcomelist: list[str] = Field(default_factory=list)
    blocklist: list[str] = Field(default_factory=list)

    # Rate and resource controls (0 = off). Trusted networks and the welcomelist are exempt.
    max_connections_per_ip: int = 50
    messages_per_minute_per_ip: int = 0
    messages_per_minute_per_sender: int = 0
    # Error replies in one session before `421 4.7.0 Too many errors` (Postfix smtpd_hard_error_limit).
    max_errors: int = 20
    # postscreen-style pregreet test: wait this long before the banner, refuse clients that talk first (0 = off).
    pregreet_delay_s: float = 0.5

    # STARTTLS: offered when both paths are set (PEM files).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Senders of these domains must use STARTTLS (530 5.7.0 at MAIL FROM otherwise).
    tls_required_sender_domains: list[str] = Field(default_factory=list)

    @property
    def uses_redis(self) -> bool:
        return self.greylisting or self.messages_per_minute_per_ip > 0 or self.messages_per_minute_per_sender > 0
