from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings

from .yara_rules import BUILTIN_RULES

MB = 1024 * 1024


class AntivirusSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_ANTIVIRUS_", extra="ignore", populate_by_name=True)

    http_port: int = 9103
    clamd_host: str = "127.0.0.1"
    clamd_port: int = 3310
    # A unix socket path (clamd.conf LocalSocket); when set it is used instead of host and port.
    clamd_socket: str = ""
    # The connection pool: clamd conversations at once (clamd's MaxThreads should be at least this).
    clamd_max_connections: int = 4
    # Decoded MIME parts streamed to clamd on their own, besides the whole message (0 = whole message only).
    clamd_max_parts: int = 50
    # Deadline for one whole scan (connect, stream, reply); past it the verdict is AV_FAIL.
    clamd_timeout_s: float = 30.0
    # The readiness PING must answer well within /readyz's own 2 s budget.
    clamd_ping_timeout_s: float = 1.5

    # Layer 2: attachment policy, archives, YARA (see attachments.py).
    layer2_enabled: bool = True
    layer2_timeout_s: float = 10.0
    archive_max_depth: int = 5
    archive_max_total_bytes: int = 100 * MB
    archive_max_members: int = 10_000
    archive_max_ratio: float = 100.0
    archive_ratio_min_bytes: int = 1 * MB
    pdf_max_stream_bytes: int = 8 * MB
    yara_dirs: list[str] = Field(default_factory=lambda: [str(BUILTIN_RULES)])
    yara_default_score: float = 5.0
    # {"MIME_EXECUTABLE": 8.0, "YARA_HTML_SMUGGLING": 10}: replaces a symbol's default score.
    symbol_scores: dict[str, float] = Field(default_factory=dict)
    # Symbols that are hard "virus" findings (the message is blocked like a clamd hit).
    virus_symbols: list[str] = Field(default_factory=list)

    # Verdicts cached by sha256 of the raw message (MAILGW_REDIS_URL).
    cache_enabled: bool = True
    cache_ttl_s: int = 24 * 3600
    cache_prefix: str = "mailgw:antivirus:"
    redis_timeout_s: float = 0.5
