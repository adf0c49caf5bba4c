"""`GatewayConfig`: everything an administrator sets, one validated document.

Defaults are the services' current environment defaults, and PMG's defaults where the gateway had none
(greylisting 3 min / 2 days / 36 days, Bayes off, quarantine lifetime 7 days, spam report daily at 00:05).
Secrets are references (names of environment variables), never values: the document travels on the bus.
Deployment details that differ per process (ports, bootstrap servers, file paths) stay in the environment.
"""

from __future__ import annotations

import functools
from datetime import time
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from .rulesystem import RuleSystemConfig
from .types import (
    DomainName,
    EmailAddress,
    EnvVarName,
    HostName,
    Name,
    Network,
    OcrLanguage,
    PasswordHash,
    Port,
    RecipientEntry,
    Section,
    SmtpListEntry,
    SymbolName,
    check_host,
)

SCHEMA_VERSION: Literal[1] = 1
MB = 1024 * 1024

TlsPolicy = Literal["none", "may", "encrypt", "verify"]
FailurePolicy = Literal["tempfail", "quarantine", "accept", "ignore"]
ScorerName = Literal["antispam", "antivirus", "ocr"]
DEFAULT_SCORERS: list[ScorerName] = ["antispam", "antivirus", "ocr"]
DEFAULT_FAILURE_POLICY: dict[ScorerName, FailurePolicy] = {"antivirus": "tempfail", "antispam": "ignore", "ocr": "ignore"}


def _unique(values: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


class Transport(Section):
    """Where mail for a domain goes (PMG "Transports"; the default one is PMG's default relay)."""

    host: HostName = "127.0.0.1"
    port: Port = 25
    protocol: Literal["smtp", "lmtp"] = "smtp"
    # none: plain; may: STARTTLS when offered; encrypt: STARTTLS required; verify: required and certificate checked.
    tls: TlsPolicy = "may"
    # Look up the MX records of `host` instead of connecting to it directly (PMG's "use MX").
    use_mx: bool = False


class Outbound(Section):
    """Mail to domains that are not relay domains (sent by trusted networks): via MX lookup or a smarthost."""

    mode: Literal["mx", "smarthost"] = "mx"
    smarthost: Transport | None = None
    tls: TlsPolicy = "may"

    @model_validator(mode="after")
    def _smarthost_given(self) -> Self:
        if self.mode == "smarthost" and self.smarthost is None:
            raise ValueError("mode 'smarthost' needs a smarthost (host, port)")
        return self


class Delivery(Section):
    """Settings of the delivery service that apply to every transport."""

    # CA bundle (a PEM file on the delivery hosts) for transports with `tls: verify`; empty: the system store.
    tls_ca_file: str = Field(default="", max_length=4096)

    @field_validator("tls_ca_file")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or not value.isprintable()):
            raise ValueError(f"expected an absolute file path: {value!r}")
        return value


class Greylisting(Section):
    enabled: bool = True
    delay_s: float = Field(default=180.0, ge=0, le=86400)
    retry_window_s: float = Field(default=2 * 86400.0, gt=0, le=30 * 86400)
    # A triplet seen passing again is remembered this long (auto-welcomelisting).
    whitelist_s: float = Field(default=36 * 86400.0, gt=0, le=365 * 86400)
    # Clients are grouped by network (big senders retry from another address of the same network).
    netmask_v4: int = Field(default=24, ge=8, le=32)
    netmask_v6: int = Field(default=64, ge=16, le=128)
    ipv6: bool = False


class DnsblSite(Section):
    zone: DomainName
    # Negative weights welcomelist (DNSWL zones).
    weight: int = Field(default=1, ge=-100, le=100)
    # Only these answers count (e.g. 127.0.0.2 ... 127.0.0.11); empty: any answer.
    answers: list[str] = Field(default_factory=list, max_length=256)

    @field_validator("answers")
    @classmethod
    def _loopback_answers(cls, value: list[str]) -> list[str]:
        for answer in value:
            parts = answer.split(".")
            if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise ValueError(f"DNSBL answers are 127.x.y.z addresses: {answer!r}")
        return value


class Dnsbl(Section):
    sites: list[DnsblSite] = Field(default_factory=list, max_length=100)
    # A client whose summed weight reaches this is rejected.
    threshold: int = Field(default=1, ge=1, le=1000)
    # When no list answered at all: accept (log and go on) or tempfail (421, the client retries later).
    on_dns_failure: Literal["accept", "tempfail"] = "accept"

    @model_validator(mode="after")
    def _distinct_zones(self) -> Self:
        _unique([s.zone for s in self.sites], "DNSBL zone")
        return self


class RateLimits(Section):
    """0 = off. Trusted networks and the SMTP welcomelist are exempt."""

    max_connections_per_ip: int = Field(default=50, ge=0, le=100_000)
    messages_per_minute_per_ip: int = Field(default=0, ge=0, le=1_000_000)
    messages_per_minute_per_sender: int = Field(default=0, ge=0, le=1_000_000)
    max_errors: int = Field(default=20, ge=1, le=1000)


class RecipientVerification(Section):
    # off; static: only `addresses` (and domains' catch-all entries `@domain`); ldap: the address must exist in
    # the directory of `ldap_profile`; callout: ask the domain's transport (RCPT TO) and cache the answer.
    mode: Literal["off", "static", "ldap", "callout"] = "off"
    addresses: list[RecipientEntry] = Field(default_factory=list, max_length=1_000_000)
    ldap_profile: Name | None = None
    # Answer for an unknown recipient: 550 (permanent) or 450 (try later, e.g. while a directory is being filled).
    reject_code: Literal[450, 550] = 550
    callout_cache_s: int = Field(default=3600, ge=0, le=30 * 86400)

    @field_validator("mode", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _mode_needs(self) -> Self:
        if self.mode == "ldap" and not self.ldap_profile:
            raise ValueError("mode 'ldap' needs ldap_profile (the name of an entry of ldap_profiles)")
        if self.mode == "static" and not self.addresses:
            raise ValueError("mode 'static' needs addresses")
        return self


class IngressPolicy(Section):
    """Pre-queue policy of the SMTP ingress (PMG: Mail Proxy > Options, postscreen, greylisting)."""

    max_message_bytes: int = Field(default=25 * MB, ge=1024, le=1024 * MB)
    max_recipients: int = Field(default=100, ge=1, le=100_000)
    greylisting: Greylisting = Field(default_factory=Greylisting)
    dnsbl: Dnsbl = Field(default_factory=Dnsbl)
    # Reject on an SPF fail (PMG: on); reject non-FQDN or invalid HELO names; clients without a verified reverse
    # name; senders whose domain does not resolve (PMG: off, off, off).
    spf: bool = True
    helo_checks: bool = False
    reject_unknown_client: bool = False
    reject_unknown_sender_domain: bool = False
    # postscreen-style pregreet test: wait this long before the banner, refuse clients that talk first (0 = off).
    pregreet_delay_s: float = Field(default=0.5, ge=0, le=30)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    recipient_verification: RecipientVerification = Field(default_factory=RecipientVerification)
    # SMTP-level lists: IPs, networks, sender addresses, sender domains (`.domain` = and subdomains).
    welcomelist: list[SmtpListEntry] = Field(default_factory=list, max_length=100_000)
    blocklist: list[SmtpListEntry] = Field(default_factory=list, max_length=100_000)
    # Senders of these domains must use STARTTLS.
    tls_required_sender_domains: list[DomainName] = Field(default_factory=list, max_length=100_000)
    # Before-queue mode: after DATA wait up to `before_queue_deadline_s` for the rules' decision and answer 550
    # when every recipient is blocked; past the deadline (or off) the message is accepted (after-queue).
    before_queue: bool = False
    before_queue_deadline_s: float = Field(default=30.0, gt=0, le=600)


class Bayes(Section):
    enabled: bool = False
    # Messages learnt of each class before Bayes scores anything.
    min_learns: int = Field(default=200, ge=0, le=1_000_000)
    autolearn: bool = True
    # Autolearn as ham below, as spam at or above (SpamAssassin's defaults).
    autolearn_ham_below: float = Field(default=0.1, ge=-1000, le=1000)
    autolearn_spam_from: float = Field(default=12.0, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.autolearn_ham_below >= self.autolearn_spam_from:
            raise ValueError("autolearn_ham_below must be lower than autolearn_spam_from")
        return self


class Scoring(Section):
    """The scorers and how their results count."""

    # Verdicts awaited for every message; a decision is taken with what arrived after `deadline_s`.
    scorers: list[ScorerName] = Field(default_factory=lambda: list(DEFAULT_SCORERS))
    deadline_s: float = Field(default=60.0, gt=0, le=3600)
    # What a missing or failed verdict means, per scorer: tempfail (the sender retries, like rspamd's soft
    # reject), quarantine (an administrator looks), accept (fail open), ignore (decide without it).
    failure_policy: dict[ScorerName, FailurePolicy] = Field(default_factory=lambda: dict(DEFAULT_FAILURE_POLICY))
    # A message scoring at least this is spam (header `X-Spam-Flag`, `mailgw scan`); the rule system's
    # spam-level objects decide what happens at which level.
    spam_threshold: float = Field(default=5.0, ge=-1000, le=1000)
    # Replaces the score of a symbol, e.g. {"MIME_EXECUTABLE": 8.0} (PMG: custom scores).
    symbol_scores: dict[SymbolName, float] = Field(default_factory=dict, max_length=100_000)
    # Symbols that count as a virus finding (blocked like a clamd hit).
    virus_symbols: list[SymbolName] = Field(default_factory=list, max_length=10_000)
    bayes: Bayes = Field(default_factory=Bayes)
    ocr_languages: list[OcrLanguage] = Field(default_factory=lambda: ["eng"], min_length=1, max_length=20)

    @model_validator(mode="after")
    def _policy_of_known_scorers(self) -> Self:
        _unique(list(self.scorers), "scorer")
        return self


class LdapProfile(Section):
    """One directory (PMG: LDAP profile), used by Who objects and recipient verification."""

    # ldap://host[:port] or ldaps://host[:port]; several for failover, tried in order.
    servers: list[str] = Field(min_length=1, max_length=8)
    starttls: bool = False
    verify_certificate: bool = True
    bind_dn: str = Field(default="", max_length=1024)
    password_env: EnvVarName | None = None
    base_dn: str = Field(max_length=1024)
    group_base_dn: str = Field(default="", max_length=1024)
    user_filter: str = Field(default="(|(objectClass=user)(objectClass=inetOrgPerson)(objectClass=person))",
                             max_length=4096)
    mail_attributes: list[str] = Field(default_factory=lambda: ["mail", "proxyAddresses"], min_length=1, max_length=20)
    account_attribute: str = Field(default="sAMAccountName", max_length=64)
    group_classes: list[str] = Field(default_factory=lambda: ["group", "groupOfNames", "groupOfUniqueNames",
                                                              "univentionGroup", "ipausergroup"], max_length=20)
    group_member_attributes: list[str] = Field(default_factory=lambda: ["member", "uniqueMember"], min_length=1,
                                               max_length=10)
    # The directory is copied into the cache this often; rules keep working from the cache while it is down.
    sync_interval_s: int = Field(default=3600, ge=60, le=7 * 86400)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("servers")
    @classmethod
    def _ldap_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            scheme, sep, rest = url.partition("://")
            host = rest.split("/", 1)[0].rsplit(":", 1)[0] if not rest.startswith("[") else rest[1:].split("]", 1)[0]
            if not sep or scheme.lower() not in ("ldap", "ldaps") or not host:
                raise ValueError(f"expected ldap://host[:port] or ldaps://host[:port]: {url!r}")
            check_host(host)
        return value

    @field_validator("bind_dn", "base_dn", "group_base_dn")
    @classmethod
    def _dn(cls, value: str) -> str:
        if value and ("=" not in value or any(ord(c) < 32 for c in value)):
            raise ValueError(f"not a distinguished name (e.g. dc=example,dc=com): {value!r}")
        return value

    @field_validator("user_filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        depth = 0
        for char in value:
            depth += (char == "(") - (char == ")")
            if depth < 0:
                break
        if not value.startswith("(") or depth != 0 or any(ord(c) < 32 for c in value):
            raise ValueError(f"not an LDAP filter (balanced parentheses, e.g. (objectClass=person)): {value!r}")
        return value

    @field_validator("mail_attributes", "group_classes", "group_member_attributes", "account_attribute")
    @classmethod
    def _attribute_names(cls, value: list[str] | str) -> list[str] | str:
        for name in [value] if isinstance(value, str) else value:
            if not name.replace("-", "").replace(";", "").isalnum() or len(name) > 64:
                raise ValueError(f"not an LDAP attribute or class name: {name!r}")
        return value

    @model_validator(mode="after")
    def _password_when_bound(self) -> Self:
        if self.bind_dn and not self.password_env:
            raise ValueError("bind_dn needs password_env (the environment variable holding the bind password)")
        return self


class QuarantineLifetimes(Section):
    spam_days: int = Field(default=7, ge=1, le=3650)
    virus_days: int = Field(default=7, ge=1, le=3650)
    attachment_days: int = Field(default=7, ge=1, le=3650)
    policy_days: int = Field(default=7, ge=1, le=3650)


class SpamReport(Section):
    """The daily mail to each user listing their quarantined spam."""

    enabled: bool = True
    style: Literal["short", "verbose"] = "verbose"
    # Sent at this local time, covering the last `timespan_h` hours.
    at: str = "00:05"
    timezone: str = "UTC"
    timespan_h: int = Field(default=24, ge=1, le=24 * 7)
    # Base URL of the quarantine links in the report, and the secret signing them (an environment variable name).
    link_base_url: str = Field(default="https://127.0.0.1:8443/quarantine", max_length=2048)
    link_secret_env: EnvVarName = "MAILGW_QUARANTINE_LINK_SECRET"
    link_lifetime_days: int = Field(default=7, ge=1, le=365)

    @field_validator("at", mode="before")
    @classmethod
    def _hh_mm(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 10:30 as the base-60 integer 630.
        if isinstance(value, int):
            raise ValueError("write the time quoted, as 'HH:MM' (unquoted, YAML reads 10:30 as a number)")
        if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
            raise ValueError(f"expected a time 'HH:MM': {value!r}")
        try:
            time.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"expected a time 'HH:MM': {value!r}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (IANA names, e.g. Europe/Vienna)") from exc
        return value

    @field_validator("link_base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or any(ord(c) <= 32 for c in value):
            raise ValueError(f"expected an http(s):// URL: {value!r}")
        return value


class Quarantine(Section):
    lifetimes: QuarantineLifetimes = Field(default_factory=QuarantineLifetimes)
    spam_report: SpamReport = Field(default_factory=SpamReport)


class NotificationTemplate(Section):
    subject: str = Field(max_length=1000)
    body: str = Field(max_length=100_000)


class Notifications(Section):
    admin_address: EmailAddress = "postmaster@example.com"
    # Envelope and header sender of notifications and reports.
    from_address: EmailAddress = "postmaster@example.com"
    # Daily statistics mail to the administrator.
    admin_report: bool = True
    # Named templates used by notification actions of the rule system (macros: see docs/configuration.md).
    templates: dict[Name, NotificationTemplate] = Field(default_factory=dict, max_length=1000)


class AdminUser(Section):
    name: Name
    role: Literal["root", "admin", "qmanager", "audit", "helpdesk"] = "admin"
    password_hash: PasswordHash
    email: EmailAddress | None = None
    enabled: bool = True


@functools.cache
def default_rule_system() -> RuleSystemConfig:
    """The shipped rule set (PMG's default rules), parsed once: the model is frozen, so sharing it is safe."""
    return RuleSystemConfig.defaults()


class GatewayConfig(Section):
    """The whole administrator-set configuration of one gateway (every replica of every service follows it)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    # Mail for these domains is accepted from anywhere (inbound).
    relay_domains: list[DomainName] = Field(default_factory=lambda: ["example.com"], max_length=100_000)
    # Clients in these networks may relay to any domain (outbound).
    trusted_networks: list[Network] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"], max_length=10_000)
    # The mail server behind the gateway (inbound mail of every relay domain without its own transport).
    default_transport: Transport = Field(default_factory=Transport)
    # Per relay domain (or sub-domain) transport, overriding the default.
    transports: dict[DomainName, Transport] = Field(default_factory=dict, max_length=100_000)
    outbound: Outbound = Field(default_factory=Outbound)
    delivery: Delivery = Field(default_factory=Delivery)
    ingress: IngressPolicy = Field(default_factory=IngressPolicy)
    scoring: Scoring = Field(default_factory=Scoring)
    rules: RuleSystemConfig = Field(default_factory=default_rule_system)
    ldap_profiles: dict[Name, LdapProfile] = Field(default_factory=dict, max_length=100)
    quarantine: Quarantine = Field(default_factory=Quarantine)
    notifications: Notifications = Field(default_factory=Notifications)
    admins: list[AdminUser] = Field(default_factory=list, max_length=10_000)

    @field_validator("relay_domains")
    @classmethod
    def _distinct_domains(cls, value: list[str]) -> list[str]:
        return _unique(value, "relay domain")

    @field_validator("trusted_networks")
    @classmethod
    def _distinct_networks(cls, value: list[str]) -> list[str]:
        return _unique(value, "trusted network")

    @field_validator("admins")
    @classmethod
    def _distinct_admins(cls, value: list[AdminUser]) -> list[AdminUser]:
        _unique([a.name for a in value], "admin user")
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        profile = self.ingress.recipient_verification.ldap_profile
        if profile is not None and profile not in self.ldap_profiles:
            known = ", ".join(sorted(self.ldap_profiles)) or "none defined"
            raise ValueError(f"ingress.recipient_verification.ldap_profile: unknown LDAP profile {profile!r} "
                             f"(ldap_profiles: {known})")
        unknown_profiles = sorted(self.rules.ldap_profiles_used() - set(self.ldap_profiles))
        if unknown_profiles:
            known = ", ".join(sorted(self.ldap_profiles)) or "none defined"
            raise ValueError(f"rules.who: ldap_user/ldap_group objects name unknown LDAP profile(s) {unknown_profiles} "
                             f"(ldap_profiles: {known})")
        unknown_templates = sorted(self.rules.notification_templates_used() - set(self.notifications.templates))
        if unknown_templates:
            known = ", ".join(sorted(self.notifications.templates)) or "none defined"
            raise ValueError(f"rules.actions: notify actions name unknown template(s) {unknown_templates} "
                             f"(notifications.templates: {known})")
        return self


def is_set(section: Section, field: str) -> bool:
    """Whether the configuration itself gives `field` of `section` (a published version writes every field out;
    the shipped defaults give none). A service whose environment has a setting for the same value uses the
    environment's only while the configuration does not give it: the configuration wins once published."""
    return field in section.model_fields_set


def shipped_defaults() -> GatewayConfig:
    """The configuration in force while `mailgw.config` holds no version."""
    return GatewayConfig()
