from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class AntivirusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_ANTIVIRUS_", extra="ignore", populate_by_name=True)

    http_port: int = 9103
    clamd_host: str = "127.0.0.1"
    clamd_port: int = 3310
    # Deadline for one whole scan (connect, stream, reply); past it the verdict is AV_FAIL.
    clamd_timeout_s: float = 30.0
    # The readiness PING must answer well within /readyz's own 2 s budget.
    clamd_ping_timeout_s: float = 1.5
