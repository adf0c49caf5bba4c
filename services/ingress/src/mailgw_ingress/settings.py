from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from mailgw_libs.settings import ServiceSettings


class DnsListSetting(BaseModel):
    zone: str
    weight: float = 1.0
    # Codes that count (e.g. ["127.0.0.2"]); empty = any 127.0.0.0/8 answer.
    answers: list[str] = Field(default_factory=list)


class LdapDirectorySetting(BaseModel):
    name: str
    uri: str
    base_dn: str
    bind_dn: str = ""
    password: str = ""
    user_filter: str = "(objectClass=*)"
    mail_attributes: list[str] = Field(default_factory=lambda: ["mail", "proxyAddresses"])
    group_base_dn: str = ""
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
    member_attribute: str = "member"
    timeout_s: float = 5.0


class IngressSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILGW_INGRESS_", extra="ignore", populate_by_name=True)

    http_port: int = 9101
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    # Name in the banner and in the Received header.
    hostname: str = "mailgw.localdomain"
    # Mail for these domains is accepted from anywhere (inbound).
    relay_domains: list[str] = Field(default_factory=lambda: ["example.com"])
    # Clients in these networks may relay to any domain (outbound).
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    max_recipients: int = 100
    # Longest line accepted in DATA (RFC 5321 says 1000, real mailers send longer ones).
    max_line_bytes: int = 65_536
    # Command timeout: the time a client has to send one complete SMTP command, seconds (Postfix smtpd_timeout).
    session_timeout_s: float = 300.0
    # Time a client has for the whole DATA transfer, seconds (RFC 5321 4.5.3.2.6: 10 minutes).
    data_timeout_s: float = 600.0

    # Greylisting (Redis at MAILGW_REDIS_URL). On in production like PMG; `make run` turns it off.
    greylisting: bool = True
    greylist_delay_s: float = 180.0
    greylist_retry_window_s: float = 2 * 86400.0
    greylist_whitelist_s: float = 36 * 86400.0
    # Prefix of every Redis key of this service (greylisting, rate counters).
    redis_prefix: str = "mailgw:ingress:"
    # Timeout of one Redis call on the SMTP path; past it the check fails open.
    redis_timeout_s: float = 0.5

    # SMTP welcomelist / blocklist: IPs, networks, sender addresses, sender domains (`.domain` = and subdomains).
    welcomelist: list[str] = Field(default_factory=list)
    blocklist: list[str] = Field(default_factory=list)

    # Rate and resource controls (0 = off). Trusted networks and the welcomelist are exempt.
    max_connections_per_ip: int = 50
    messages_per_minute_per_ip: int = 0
    messages_per_minute_per_sender: int = 0
    # Error replies in one session before `421 4.7.0 Too many errors` (Postfix smtpd_hard_error_limit).
    max_errors: int = 20
    # postscreen-style pregreet test: wait this long before the banner, refuse clients that talk first (0 = off).
    pregreet_delay_s: float = 0.5

    # STARTTLS: offered when both paths are set (PEM files).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Senders of these domains must use STARTTLS (530 5.7.0 at MAIL FROM otherwise).
    tls_required_sender_domains: list[str] = Field(default_factory=list)

    # Refuse clients that send more commands before the HELO/EHLO reply (RFC 2920 forbids it; bots do it).
    reject_pipelined_greeting: bool = True

    # DNS lists at connection time (postscreen-style); DNS from MAILGW_DNS_NAMESERVERS/_PORT/_TIMEOUT.
    # MAILGW_INGRESS_DNSBL_LISTS='[{"zone": "zen.example", "weight": 2, "answers": ["127.0.0.2"]},
    #                              {"zone": "wl.example", "weight": -5}]'
    dnsbl_lists: list[DnsListSetting] = Field(default_factory=list)
    dnsbl_threshold: float = 1.0
    dnsbl_timeout_s: float = 2.0
    dnsbl_cache_ttl_s: float = 300.0
    # When no list answered: "accept" (log and go on, the default) or "tempfail" (421).
    dnsbl_on_dns_failure: Literal["accept", "tempfail"] = "accept"

    # SPF at MAIL FROM (HELO identity for the null sender); Received-SPF on accepted mail.
    spf: bool = False
    spf_reject_fail: bool = True
    greylist_spf_pass_bypass: bool = False
    # Sender and client checks (Postfix: reject_unknown_sender_domain, reject_invalid_helo_hostname,
    # reject_non_fqdn_helo_hostname, reject_unknown_client_hostname / reverse_client_hostname).
    reject_unknown_sender_domain: bool = False
    helo_checks: bool = False
    helo_require_fqdn: bool = False
    # "off", "ptr" (a PTR record must exist) or "fcrdns" (a PTR name must resolve back to the client).
    client_rdns_check: Literal["off", "ptr", "fcrdns"] = "off"

    # Recipient verification of mail for the relay domains. Static entries: "user@domain" or "@domain" (whole
    # domain valid); a domain with entries here is verified against them.
    valid_recipients: list[str] = Field(default_factory=list)
    # LDAP directories: MAILGW_INGRESS_LDAP_DIRECTORIES='[{"name": "corp", "uri": "ldap://dc:389",
    #   "base_dn": "dc=corp", "bind_dn": "...", "password": "...", "group_base_dn": "ou=groups,dc=corp"}]'
    ldap_directories: list[LdapDirectorySetting] = Field(default_factory=list)
    ldap_domains: list[str] = Field(default_factory=list)  # empty: every relay domain
    ldap_sync_interval_s: float = 600.0
    ldap_cache_ttl_s: float = 600.0
    # Callout: an RCPT probe to the downstream server; per-domain "host:port", default for the others.
    recipient_callout: bool = False
    callout_hosts: dict[str, str] = Field(default_factory=dict)
    callout_default_host: str = "127.0.0.1:2526"
    callout_timeout_s: float = 10.0
    callout_positive_ttl_s: float = 86400.0
    callout_negative_ttl_s: float = 3600.0

    # Before-queue mode: after DATA wait (bounded) for the rules' decision on mail.actions; 550 when every
    # recipient is blocked; past the deadline accept (after-queue, the default mode).
    before_queue: bool = False
    before_queue_deadline_s: float = 30.0

    @property
    def uses_dns(self) -> bool:
        return bool(self.dnsbl_lists) or self.reject_unknown_sender_domain or self.helo_checks \
            or self.client_rdns_check != "off" or self.spf

    @property
    def uses_redis(self) -> bool:
        return (self.greylisting or self.messages_per_minute_per_ip > 0 or self.messages_per_minute_per_sender > 0
                or bool(self.dnsbl_lists) or bool(self.ldap_directories) or self.recipient_callout)
