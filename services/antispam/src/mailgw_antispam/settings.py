from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class AntispamSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_ANTISPAM_", extra="ignore", populate_by_name=True)

    http_port: int = 9102
    # Text beyond this many characters is not scanned (bounded CPU per message).
    max_scan_chars: int = 1_000_000
