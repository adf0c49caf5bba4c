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
    # Idle timeout of an SMTP session, seconds.
    session_timeout_s: float = 300.0
