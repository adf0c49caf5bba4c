import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings, shared

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
    # Records are ingested in batches of up to this many, waiting at most batch_timeout_ms for a batch to fill.
    batch_max_records: int = Field(default=500, ge=1, le=10_000)
    batch_timeout_ms: int = Field(default=200, ge=1, le=10_000)

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("database must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        return value
