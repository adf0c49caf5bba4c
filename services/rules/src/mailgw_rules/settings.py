from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings

MissingPolicy = Literal["ignore", "quarantine"]
DEFAULT_ON_MISSING: dict[str, MissingPolicy] = {"antivirus": "quarantine", "antispam": "ignore", "ocr": "ignore"}


class RulesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_RULES_", extra="ignore", populate_by_name=True)

    http_port: int = 9105
    # Scorers whose verdicts are awaited for every message.
    scorers: list[str] = Field(default_factory=lambda: ["antispam", "antivirus", "ocr"])
    # Decide with the verdicts at hand this long after the message was received.
    deadline_s: float = 60.0
    # What a missing or failed verdict means. Unscanned mail is never delivered blind when
    # the scorer is the virus scanner: it waits in quarantine for an administrator.
    on_missing: dict[str, MissingPolicy] = Field(default_factory=lambda: dict(DEFAULT_ON_MISSING))
    spam_tag_score: float = 5.0
    spam_quarantine_score: float = 10.0
    subject_tag: str = "[SPAM]"
    sweep_interval_s: float = 0.5
    # Redis keys of joined state expire after this long even if never decided (safety net).
    state_ttl_s: int = 3 * 24 * 3600
