import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings, shared

from .schema import Lifetimes

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ReportingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_REPORTING_", extra="ignore", populate_by_name=True)

    http_port: int = 8025
    # Where the reports live: `chdb://<dir>` (embedded ClickHouse, one process per directory; a relative
    # directory is relative to the working directory) or `http(s)://user:password@host:port[/database]`
    # (a server; a database in the URL wins over `database`).
    clickhouse_url: str = Field(default="chdb://var/clickhouse", validation_alias=shared("CLICKHOUSE_URL"))
    # Database holding the reporting tables (created at start).
    database: str = "mailgw"
    # Quarantined messages (metadata and raw bytes) are kept this many days after quarantined_at.
    quarantine_days: int = Field(default=7, ge=1, le=3650)
    # Lifetimes of the quarantine kinds (days); unset: quarantine_days. Other kinds (policy, ...) keep quarantine_days.
    quarantine_spam_days: int | None = Field(default=None, ge=1, le=3650)
    quarantine_virus_days: int | None = Field(default=None, ge=1, le=3650)
    quarantine_attachment_days: int | None = Field(default=None, ge=1, le=3650)
    # Expired quarantined messages are deleted this often (the TTL alone waits for merges).
    expiry_interval_s: float = Field(default=3600.0, ge=1.0, le=86400.0)

    # Per-user welcomelists/blocklists (shared with the rules service: same Redis and prefix).
    userlists_prefix: str = "mailgw:userlists"

    # Spam report (quarantine digest). Signed one-click links need the secret: without it, no report is sent
    # and the link endpoints refuse every link.
    report_secret: SecretStr = SecretStr("")
    # A report run every this many hours (1..24; 24 = daily); runs are checked for every report_check_s.
    report_interval_h: int = Field(default=24, ge=1, le=24)
    report_check_s: float = Field(default=60.0, ge=0.1, le=3600.0)
    # Links in a report stop working after this many hours.
    report_link_ttl_h: int = Field(default=7 * 24, ge=1, le=24 * 365)
    # Base URL of this API as the report's readers reach it (the links point there).
    report_base_url: str = "http://127.0.0.1:8025"
    # From: of the report (the envelope sender is null: nothing bounces back to the gateway).
    report_from: str = "Mail gateway <postmaster@localhost>"
    # Kinds listed in a user's report (virus and attachment quarantines are the administrator's, as in PMG).
    report_kinds: list[str] = Field(default_factory=lambda: ["spam"])
    report_max_items: int = Field(default=200, ge=1, le=5000)
    # Direction of the report's action for delivery: "in" = to the recipient's own mail server (its domain's
    # transport), where the quarantined mail would have gone.
    report_direction: Literal["in", "out"] = "in"

    # Records are ingested in batches of up to this many, waiting at most batch_timeout_ms for a batch to fill.
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    batch_timeout_ms: int = Field(default=200, ge=1, le=10_000)

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("database must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @field_validator("report_kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        if not value or any(not re.match(r"^[A-Za-z0-9_-]{1,64}$", k) for k in value):
            raise ValueError("report_kinds: a non-empty list of kinds such as spam, attachment")
        return value

    @property
    def lifetimes(self) -> Lifetimes:
        per_kind = {kind: days for kind, days in (("spam", self.quarantine_spam_days),
                                                   ("virus", self.quarantine_virus_days),
                                                   ("attachment", self.quarantine_attachment_days))
                    if days is not None}
        return Lifetimes.of(self.quarantine_days, per_kind)
