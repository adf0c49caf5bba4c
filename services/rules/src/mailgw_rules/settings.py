from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings

MissingPolicy = Literal["ignore", "quarantine", "tempfail"]
DEFAULT_ON_MISSING: dict[str, MissingPolicy] = {"antivirus": "tempfail", "antispam": "ignore", "ocr": "ignore"}


class RulesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_RULES_", extra="ignore", populate_by_name=True)

    http_port: int = 9105
    # Scorers whose verdicts are awaited for every message. This, deadline_s and on_missing apply while
    # mailgw.config holds no version; a published configuration's scoring section wins over them.
    scorers: list[str] = Field(default_factory=lambda: ["antispam", "antivirus", "ocr"])
    # Decide with the verdicts at hand this long after the message was received.
    deadline_s: float = 60.0
    # What a missing (at the deadline) or failed verdict means: ignore it, quarantine the message
    # ("unscanned"), or tempfail (quarantine "unscanned" flagged tempfail: rescan later). Mail the
    # virus scanner did not judge is never delivered blind.
    on_missing: dict[str, MissingPolicy] = Field(default_factory=lambda: dict(DEFAULT_ON_MISSING))
    # The rule system (YAML, see mailgw_libs.config.rulesystem); empty: the shipped PMG default rules.
    # Replaced live by the configuration topic once the service follows it.
    ruleset_file: str = ""
    # Cached answers of the LDAP profiles the rules name (mailgw_libs.directory) under this Redis key prefix;
    # a live lookup's answer is reused this long (full syncs replace them at the profile's sync_interval_s).
    directory_prefix: str = "mailgw:rules:directory:"
    directory_cache_ttl_s: float = 600.0
    # Per-user welcomelists/blocklists (mailgw_libs.userlists) under this Redis key prefix.
    userlists_prefix: str = "mailgw:userlists"
    sweep_interval_s: float = 0.5
    # Redis keys of joined state expire after this long even if never decided (safety net).
    state_ttl_s: int = 3 * 24 * 3600
