import os

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class DnsListSetting(BaseModel):
    """A DNS list of the network checks: the symbol its listings get, its zone and score."""

    symbol: str
    zone: str
    weight: float = 1.0
    # Codes that count (e.g. ["127.0.0.2"]); empty = any 127.0.0.0/8 answer.
    answers: list[str] = Field(default_factory=list)


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mailgw", "hyperscan")


def _default_dnsbl() -> list[DnsListSetting]:
    return [DnsListSetting(symbol="RBL_ZEN", zone="zen.spamhaus.org", weight=3.0)]


def _default_uribl() -> list[DnsListSetting]:
    return [DnsListSetting(symbol="URIBL_DBL", zone="dbl.spamhaus.org", weight=3.0),
            DnsListSetting(symbol="URIBL_SURBL", zone="multi.surbl.org", weight=2.5)]


def _default_dnswl() -> list[DnsListSetting]:
    return [DnsListSetting(symbol="RCVD_IN_DNSWL", zone="list.dnswl.org", weight=-1.0)]


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
    # Compiled Hyperscan databases are kept here and loaded at the next start ("" = compile every time).
    hyperscan_cache_dir: str = Field(default_factory=_default_cache_dir)
    # Languages the site reads (ISO 639-1 codes, JSON list); mail confidently in another one hits
    # MGW_LANG_NOT_OK. ["all"] turns the check off.
    ok_languages: list[str] = Field(default_factory=lambda: ["all"])
    # Score at which `mailgw scan` calls a message spam (the rules service owns the pipeline's actions).
    spam_threshold: float = 5.0
    # Bayes (libs mailgw_libs.bayes; tokens in Redis at MAILGW_REDIS_URL).
    bayes: bool = True
    bayes_site: str = "default"           # name of the site database
    bayes_per_user: bool = False          # also a database per recipient (used once it has the minimum training)
    bayes_min_spam: int = 200             # minimum training before Bayes scores
    bayes_min_ham: int = 200
    bayes_autolearn: bool = True
    autolearn_spam: float = 12.0          # learn as spam at or above this score (Bayes excluded) ...
    autolearn_ham: float = 0.1            # ... as ham at or below this one
    bayes_cache_s: float = 30.0           # token counts reused in-process this long (site database; 0: off)
    bayes_redis_timeout_s: float = 0.5    # a lookup slower than this scans without Bayes (fail open)
    # Authentication (SPF from ingress, DKIM, DMARC, ARC) through the resolver of MAILGW_DNS_*; its
    # result goes on delivered mail as Authentication-Results with this authserv-id.
    auth_checks: bool = True
    authserv_id: str = "mailgw"
    # DNS list checks (DNSBL/DNSWL on the first untrusted relay, URIBL on link domains): off by default.
    network_checks: bool = False
    # Our own relays: the first Received hop outside these is the one looked up (JSON list of CIDRs).
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    dnsbl_lists: list[DnsListSetting] = Field(default_factory=_default_dnsbl)
    dnswl_lists: list[DnsListSetting] = Field(default_factory=_default_dnswl)
    uribl_lists: list[DnsListSetting] = Field(default_factory=_default_uribl)
    dnsl_timeout_s: float = 2.0
    dnsl_cache_ttl_s: float = 300.0
    redis_prefix: str = "mailgw:antispam:"
