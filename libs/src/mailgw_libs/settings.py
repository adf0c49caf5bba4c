"""Settings base shared by every service.

Each service subclasses `ServiceSettings` with `env_prefix="MAILGW_<NAME>_"`; the
settings shared by all services keep their unprefixed names (MAILGW_KAFKA_BOOTSTRAP,
MAILGW_REDIS_URL, ...), so one environment configures a whole deployment.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024


def shared(name: str) -> AliasChoices:
    return AliasChoices(f"MAILGW_{name}")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_", extra="ignore", populate_by_name=True)

    # default= as a keyword: mypy (no pydantic plugin) only sees keyword defaults, else `Settings()` fails type checks.
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", validation_alias=shared("KAFKA_BOOTSTRAP"))
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias=shared("REDIS_URL"))
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, validation_alias=shared("MAX_MESSAGE_BYTES"))
    log_level: str = Field(default="INFO", validation_alias=shared("LOG_LEVEL"))
    kafka_fetch_max_wait_ms: int = Field(default=50, validation_alias=shared("KAFKA_FETCH_MAX_WAIT_MS"))
    partitions: int = Field(default=4, validation_alias=shared("PARTITIONS"))
    # DNS for the network checks (mailgw_libs.resolver.make_resolver): None = the system resolver;
    # MAILGW_DNS_NAMESERVERS is a JSON list of addresses.
    dns_nameservers: list[str] | None = Field(default=None, validation_alias=shared("DNS_NAMESERVERS"))
    dns_port: int = Field(default=53, validation_alias=shared("DNS_PORT"))
    dns_timeout: float = Field(default=5.0, validation_alias=shared("DNS_TIMEOUT"))
    # Health, readiness and metrics endpoint of this process.
    http_host: str = "127.0.0.1"
    http_port: int = 9100
    # Publishing waits at most this long for the broker's acknowledgement.
    publish_timeout_s: float = Field(default=10.0, validation_alias=shared("PUBLISH_TIMEOUT_S"))

    @property
    def kafka_max_bytes(self) -> int:
        """Kafka record limit: the raw message compresses, but headers and framing add bytes."""
        return self.max_message_bytes + 1024 * 1024
