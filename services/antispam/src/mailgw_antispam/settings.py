from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class AntispamSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_ANTISPAM_", extra="ignore", populate_by_name=True)

    http_port: int = 9102
    # Text beyond this many characters is not scanned (bounded CPU per message).
    max_scan_chars: int = 1_000_000
    # Extra SpamAssassin-style rule directories or .cf files, loaded after our own rules (JSON list).
    rule_dirs: list[str] = Field(default_factory=list)
    # Load the project's own rule set (rules/cf).
    default_rules: bool = True
    # Match with Hyperscan when it is installed (else Python re; both give the same hits).
    hyperscan: bool = True
    # Score at which `mailgw scan` calls a message spam (the rules service owns the pipeline's actions).
    spam_threshold: float = 5.0
