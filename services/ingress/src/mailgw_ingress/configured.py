"""The SMTP policy in force: the central configuration (`mailgw.config`) over the environment.

Precedence (docs/configuration.md, "Who reads what"): a field the published configuration gives wins; while the
topic holds no version (the shipped defaults give no field) the environment's setting stays in force, so a
gateway started from the environment alone (devstack, `make run` with greylisting off) is unchanged.

`PolicyBuilder.build` prepares a whole `SmtpPolicy` (checkers, lists, directories) before anything is swapped;
the service then puts it in force at once (`IngressHandler.replace`).

Environment-only (they cannot change in a running listener, or are plumbing): the listen address and port,
the STARTTLS certificate files, the hostname, line length and timeouts, Redis and DNS servers, the DNSBL and
callout timeouts and cache lifetimes, and MAILGW_MAX_MESSAGE_BYTES, which stays the upper bound of
`ingress.max_message_bytes` (the configuration can lower the size limit, not raise it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import dns.asyncresolver
import redis.asyncio as aioredis

from mailgw_libs.config.model import GatewayConfig, IngressPolicy, is_set
from mailgw_libs.directory import Directory, DirectoryMisconfigured, DirectoryProfile, profile_from_config
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.failfast import Breaker

from .access import AccessList
from .directories import DirectoryPool, DirectorySpec
from .dnsbl import ConnectionDnsbl
from .greylist import GreylistPolicy
from .hostchecks import HostChecks, RdnsMode
from .policy import SmtpPolicy
from .ratelimit import RateLimiter
from .recipients import (
    CalloutRecipients,
    DirectoryRecipients,
    Known,
    RecipientSource,
    RecipientVerifier,
    StaticRecipients,
)
from .relay import RelayPolicy, normalise_domain
from .settings import DnsListSetting, IngressSettings
from .spfcheck import SpfChecker


class UnusableDirectory:
    """A configured LDAP profile that cannot be used (its password variable is not set): every recipient of
    the verified domains is answered "try later", never guessed known or unknown."""

    name = "ldap"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def verify(self, address: str, domain: str) -> Known | None:
        return Known.TEMPFAIL


def _given(section: IngressPolicy | GatewayConfig, name: str) -> bool:
    return is_set(section, name)


class PolicyBuilder:
    """Builds policies from the environment and a configuration, sharing the long-lived parts (Redis client,
    DNS resolver, circuit breaker, LDAP directories) between versions."""

    def __init__(self, settings: IngressSettings, redis: aioredis.Redis, resolver: dns.asyncresolver.Resolver,
                 *, breaker: Breaker | None = None, directories: DirectoryPool | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.resolver = resolver
        self.breaker = breaker or Breaker()  # one Redis: one failure opens it for every check
        self.directories = directories or DirectoryPool(redis, settings.redis_prefix + "dir:",
                                                        settings.ldap_cache_ttl_s)
        self.environ = environ if environ is not None else os.environ
        self.dns_checker = DnsListChecker(resolver, redis, settings.dnsbl_cache_ttl_s, settings.dnsbl_timeout_s,
                                          prefix=settings.redis_prefix + "dnsl:", breaker=self.breaker)
        self.rates = RateLimiter(redis, settings.redis_prefix, breaker=self.breaker)

    async def build(self, config: GatewayConfig) -> SmtpPolicy:
        """The policy of `config` over the environment (see the module docstring). Starts or stops directory
        sync loops as the recipient verification needs them; everything else is plain construction."""
        s, ing = self.settings, config.ingress
        relay_domains = config.relay_domains if _given(config, "relay_domains") else s.relay_domains
        trusted = config.trusted_networks if _given(config, "trusted_networks") else s.trusted_networks
        per_ip = ing.rate_limits.messages_per_minute_per_ip if _given(ing, "rate_limits") \
            else s.messages_per_minute_per_ip
        per_sender = ing.rate_limits.messages_per_minute_per_sender if _given(ing, "rate_limits") \
            else s.messages_per_minute_per_sender
        spf_on = ing.spf if _given(ing, "spf") else s.spf
        helo_on = ing.helo_checks if _given(ing, "helo_checks") else s.helo_checks
        # The configuration's helo_checks means both the syntax check and the FQDN requirement (PMG's switch).
        helo_fqdn = ing.helo_checks if _given(ing, "helo_checks") else s.helo_require_fqdn
        rdns: RdnsMode = ("fcrdns" if ing.reject_unknown_client else "off") if _given(ing, "reject_unknown_client") \
            else s.client_rdns_check
        unknown_sender = ing.reject_unknown_sender_domain if _given(ing, "reject_unknown_sender_domain") \
            else s.reject_unknown_sender_domain
        hostchecks = None
        if spf_on or helo_on or rdns != "off" or unknown_sender or self._dnsbl_lists(config):
            hostchecks = HostChecks(self.resolver, own_names=[s.hostname], own_ips=[s.smtp_host], helo_checks=helo_on,
                                    helo_require_fqdn=helo_fqdn, reject_unknown_sender_domain=unknown_sender, rdns=rdns)
        tls_required = ing.tls_required_sender_domains if _given(ing, "tls_required_sender_domains") \
            else s.tls_required_sender_domains
        recipients, unknown_code = await self._recipients(config, relay_domains)
        # Parsing long lists (100,000s of domains, networks, addresses) takes CPU time: not on the SMTP loop.
        relay, welcomelist, blocklist = await asyncio.to_thread(
            _prepare_lists, relay_domains, trusted, ing.welcomelist if _given(ing, "welcomelist") else s.welcomelist,
            ing.blocklist if _given(ing, "blocklist") else s.blocklist)
        return SmtpPolicy(
            relay=relay,
            max_recipients=ing.max_recipients if _given(ing, "max_recipients") else s.max_recipients,
            max_message_bytes=min(ing.max_message_bytes, s.max_message_bytes) if _given(ing, "max_message_bytes")
            else s.max_message_bytes,
            welcomelist=welcomelist, blocklist=blocklist,
            greylist=self._greylist(ing),
            rates=self.rates if per_ip > 0 or per_sender > 0 else None,
            max_connections_per_ip=ing.rate_limits.max_connections_per_ip if _given(ing, "rate_limits")
            else s.max_connections_per_ip,
            messages_per_minute_per_ip=per_ip, messages_per_minute_per_sender=per_sender,
            tls_required_sender_domains=frozenset(normalise_domain(d) for d in tls_required),
            dnsbl=self._dnsbl(config),
            hostchecks=hostchecks,
            spf=SpfChecker(s.dns_nameservers, s.dns_port, s.dns_timeout, s.hostname) if spf_on else None,
            # The configuration's spf switch is PMG's "reject on SPF fail"; the environment has both switches.
            spf_reject_fail=True if _given(ing, "spf") else s.spf_reject_fail,
            greylist_spf_pass_bypass=s.greylist_spf_pass_bypass,
            recipients=recipients, unknown_recipient_code=unknown_code,
            before_queue=ing.before_queue if _given(ing, "before_queue") else s.before_queue,
            before_queue_deadline_s=ing.before_queue_deadline_s if _given(ing, "before_queue_deadline_s")
            else s.before_queue_deadline_s,
            reject_pipelined_greeting=s.reject_pipelined_greeting,
            max_errors=ing.rate_limits.max_errors if _given(ing, "rate_limits") else s.max_errors,
            pregreet_delay_s=ing.pregreet_delay_s if _given(ing, "pregreet_delay_s") else s.pregreet_delay_s,
        )

    def _greylist(self, ing: IngressPolicy) -> GreylistPolicy | None:
        s = self.settings
        if _given(ing, "greylisting"):
            g = ing.greylisting
            if not g.enabled:
                return None
            return GreylistPolicy(self.redis, s.redis_prefix, g.delay_s, g.retry_window_s, g.whitelist_s,
                                  breaker=self.breaker, netmask_v4=g.netmask_v4, netmask_v6=g.netmask_v6,
                                  ipv6=g.ipv6)
        if not s.greylisting:
            return None
        return GreylistPolicy(self.redis, s.redis_prefix, s.greylist_delay_s, s.greylist_retry_window_s,
                              s.greylist_whitelist_s, breaker=self.breaker)

    def _dnsbl_lists(self, config: GatewayConfig) -> list[DnsList]:
        if _given(config.ingress, "dnsbl"):
            return [DnsList(site.zone, float(site.weight), "ip", frozenset(site.answers) or None)
                    for site in config.ingress.dnsbl.sites]
        return [_env_list(d) for d in self.settings.dnsbl_lists]

    def _dnsbl(self, config: GatewayConfig) -> ConnectionDnsbl | None:
        lists = self._dnsbl_lists(config)
        if not lists:
            return None
        threshold: float
        on_failure: Literal["accept", "tempfail"]
        if _given(config.ingress, "dnsbl"):
            threshold, on_failure = config.ingress.dnsbl.threshold, config.ingress.dnsbl.on_dns_failure
        else:
            threshold, on_failure = self.settings.dnsbl_threshold, self.settings.dnsbl_on_dns_failure
        return ConnectionDnsbl(self.dns_checker, lists, threshold, on_failure)

    async def _recipients(self, config: GatewayConfig,
                          relay_domains: list[str]) -> tuple[RecipientVerifier | None, int]:
        """The recipient verification of `config` (or the environment's) and its answer to unknown recipients."""
        if not _given(config.ingress, "recipient_verification"):
            return await self._env_recipients(), 550
        rv = config.ingress.recipient_verification
        sources: list[RecipientSource] = []
        specs: dict[str, DirectorySpec] = {}
        if rv.mode == "static":
            sources.append(StaticRecipients(list(rv.addresses)))
        elif rv.mode == "ldap" and rv.ldap_profile is not None:
            name, profile = rv.ldap_profile, config.ldap_profiles[rv.ldap_profile]
            try:
                specs[name] = DirectorySpec(profile_from_config(name, profile, self.environ), profile.sync_interval_s)
            except DirectoryMisconfigured as exc:
                sources.append(UnusableDirectory(str(exc)))
        elif rv.mode == "callout":
            sources.append(self._callout(config, rv.callout_cache_s))
        directories = await self.directories.apply(specs)
        if directories:
            # Every relay domain is verified against the directory (the configuration has no per-domain list).
            sources.append(DirectoryRecipients(list(directories.values()), relay_domains))
        return (RecipientVerifier(sources) if sources else None), rv.reject_code

    async def _env_recipients(self) -> RecipientVerifier | None:
        s = self.settings
        specs = {d.name: DirectorySpec(DirectoryProfile(
            name=d.name, uri=d.uri, base_dn=d.base_dn, bind_dn=d.bind_dn, password=d.password,
            user_filter=d.user_filter, mail_attributes=tuple(d.mail_attributes), group_base_dn=d.group_base_dn,
            group_filter=d.group_filter, member_attribute=d.member_attribute, timeout_s=d.timeout_s),
            s.ldap_sync_interval_s) for d in s.ldap_directories}
        directories: dict[str, Directory] = await self.directories.apply(specs)
        sources: list[RecipientSource] = []
        if s.valid_recipients:
            sources.append(StaticRecipients(s.valid_recipients))
        if directories:
            sources.append(DirectoryRecipients(list(directories.values()), s.ldap_domains))
        if s.recipient_callout:
            sources.append(CalloutRecipients(
                s.callout_hosts, s.callout_default_host, s.hostname, self.redis, prefix=s.redis_prefix,
                positive_ttl_s=s.callout_positive_ttl_s, negative_ttl_s=s.callout_negative_ttl_s,
                timeout_s=s.callout_timeout_s, breaker=self.breaker))
        return RecipientVerifier(sources) if sources else None

    def _callout(self, config: GatewayConfig, cache_s: int) -> CalloutRecipients:
        """Callout asks the server mail for the domain goes to: its transport, else the default transport."""
        s = self.settings
        hosts = {domain: _host_port(t.host, t.port) for domain, t in config.transports.items()}
        default = _host_port(config.default_transport.host, config.default_transport.port)
        return CalloutRecipients(hosts, default, s.hostname, self.redis, prefix=s.redis_prefix,
                                 positive_ttl_s=cache_s, negative_ttl_s=cache_s, timeout_s=s.callout_timeout_s,
                                 breaker=self.breaker)


def _prepare_lists(relay_domains: Sequence[str], trusted: Sequence[str], welcomelist: Sequence[str],
                   blocklist: Sequence[str]) -> tuple[RelayPolicy, AccessList, AccessList]:
    return (RelayPolicy(list(relay_domains), list(trusted)), AccessList.parse(list(welcomelist)),
            AccessList.parse(list(blocklist)))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _env_list(setting: DnsListSetting) -> DnsList:
    return DnsList(setting.zone, setting.weight, "ip", frozenset(setting.answers) or None)
