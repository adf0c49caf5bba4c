"""Ingress follows the central configuration: the policy of a configuration over the environment (unit, with
real Redis), and the running service changing its SMTP answers on a published version without a restart and
without breaking open sessions (real Kafka, Redis, NSD and slapd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from mailgw_devstack.dnsserver import LocalDns
from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_devstack.testing import produce, publish_config, running, wait_config_read
from mailgw_ingress.app import build
from mailgw_ingress.configured import PolicyBuilder, UnusableDirectory
from mailgw_ingress.recipients import CalloutRecipients, Known, StaticRecipients
from mailgw_ingress.settings import IngressSettings
from mailgw_libs import topics
from mailgw_libs.config.document import hash_data
from mailgw_libs.config.model import GatewayConfig, shipped_defaults
from mailgw_libs.config.versions import new_version
from mailgw_libs.resolver import make_resolver

from .test_recipients import seed
from .test_smtp_policy import client

HANG_GUARD = 2000  # polls of 10 ms: a hang guard, not a timing assertion
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


def published(data: dict[str, Any]) -> GatewayConfig:
    """A configuration as a reader gets it from the topic: every field written out (so every field given)."""
    return GatewayConfig.model_validate(GatewayConfig.model_validate(data).model_dump(mode="json"))


def env_settings(redis_url: str, **overrides: Any) -> IngressSettings:
    values: dict[str, Any] = {
        "relay_domains": ["env.test"], "trusted_networks": ["10.9.0.0/16"], "greylisting": False,
        "max_recipients": 7, "max_message_bytes": 1_000_000, "welcomelist": ["192.0.2.7"],
        "blocklist": ["spam@env.test"], "dnsbl_lists": [{"zone": "bl.env.test", "weight": 2}],
        "dnsbl_threshold": 2, "valid_recipients": ["@env.test"], "redis_url": redis_url,
        "dns_nameservers": ["127.0.0.1"], "dns_port": free_port(), "http_port": free_port(),
    }
    values.update(overrides)
    return IngressSettings(**values)


@pytest.fixture
async def builder(redis_url: str, unique: str) -> AsyncIterator[PolicyBuilder]:
    settings = env_settings(redis_url, redis_prefix=f"t{unique}:")
    client = aioredis.Redis.from_url(redis_url)
    made = PolicyBuilder(settings, client, make_resolver(settings.dns_nameservers, settings.dns_port, 1.0),
                         environ={})
    yield made
    await made.directories.stop()
    await client.aclose()


async def test_with_an_empty_topic_the_environment_stays_in_force(builder: PolicyBuilder) -> None:
    policy = await builder.build(shipped_defaults())
    assert policy.relay.relay_domains == {"env.test"} and policy.relay.is_trusted("10.9.1.1")
    assert policy.greylist is None  # the `make run` profile: greylisting off
    assert (policy.max_recipients, policy.max_message_bytes) == (7, 1_000_000)
    assert policy.welcomelist.client_listed("192.0.2.7") and policy.blocklist.sender_listed("spam@env.test")
    assert policy.dnsbl is not None and [d.zone for d in policy.dnsbl.lists] == ["bl.env.test"]
    assert policy.dnsbl.threshold == 2
    assert policy.recipients is not None and isinstance(policy.recipients.sources[0], StaticRecipients)
    assert policy.spf is None and not policy.before_queue


async def test_a_published_version_wins_field_by_field(builder: PolicyBuilder) -> None:
    config = published({
        "relay_domains": ["new.test"], "trusted_networks": ["198.51.100.0/24"],
        "ingress": {
            "max_message_bytes": 50 * 1024 * 1024, "max_recipients": 3,
            "greylisting": {"enabled": True, "delay_s": 60, "netmask_v4": 32, "ipv6": False},
            "dnsbl": {"sites": [{"zone": "zen.test", "weight": 2, "answers": ["127.0.0.2"]},
                                {"zone": "wl.test", "weight": -5}], "threshold": 3, "on_dns_failure": "tempfail"},
            "spf": True, "helo_checks": True, "reject_unknown_client": True, "reject_unknown_sender_domain": True,
            "pregreet_delay_s": 0, "rate_limits": {"max_connections_per_ip": 2, "messages_per_minute_per_ip": 10,
                                                   "max_errors": 5},
            "recipient_verification": {"mode": "static", "addresses": ["bob@new.test", "@Sales.new.test"],
                                       "reject_code": 450},
            "welcomelist": [".partner.test"], "blocklist": ["203.0.113.0/24"],
            "tls_required_sender_domains": ["Bank.TEST"], "before_queue": True, "before_queue_deadline_s": 12,
        }})
    policy = await builder.build(config)
    assert policy.relay.relay_domains == {"new.test"} and not policy.relay.is_trusted("10.9.1.1")
    assert policy.relay.is_trusted("198.51.100.9")
    # The configuration can lower the listener's size limit, never raise it.
    assert (policy.max_recipients, policy.max_message_bytes) == (3, 1_000_000)
    assert policy.greylist is not None and policy.greylist.delay_s == 60 and policy.greylist.netmask_v4 == 32
    assert (await policy.greylist.check("2001:db8::1", "a@b.test", "bob@new.test")).state == "ipv6-exempt"
    assert policy.dnsbl is not None and policy.dnsbl.threshold == 3 and policy.dnsbl.on_dns_failure == "tempfail"
    assert [(d.zone, d.weight, d.answers) for d in policy.dnsbl.lists] == [
        ("zen.test", 2.0, frozenset({"127.0.0.2"})), ("wl.test", -5.0, None)]
    assert policy.hostchecks is not None and policy.hostchecks.helo_checks and policy.hostchecks.helo_require_fqdn
    assert policy.hostchecks.rdns == "fcrdns" and policy.hostchecks.reject_unknown_sender_domain
    assert policy.spf is not None and policy.spf_reject_fail
    assert (policy.max_connections_per_ip, policy.messages_per_minute_per_ip, policy.max_errors) == (2, 10, 5)
    assert policy.rates is not None and policy.pregreet_delay_s == 0
    assert policy.recipients is not None and policy.unknown_recipient_code == 450
    assert await policy.recipients.verify("bob@new.test") == (Known.KNOWN, "static")
    assert await policy.recipients.verify("eve@new.test") == (Known.UNKNOWN, "static")
    assert await policy.recipients.verify("anyone@sales.new.test") == (Known.KNOWN, "static")  # catch-all
    assert policy.welcomelist.sender_listed("x@mx.partner.test") and not policy.welcomelist.client_listed("192.0.2.7")
    assert policy.blocklist.client_listed("203.0.113.5") and not policy.blocklist.sender_listed("spam@env.test")
    assert policy.tls_required_sender_domains == {"bank.test"}
    assert policy.before_queue and policy.before_queue_deadline_s == 12


async def test_a_published_version_turns_checks_off(builder: PolicyBuilder) -> None:
    config = published({"ingress": {"greylisting": {"enabled": False}, "spf": False,
                                    "recipient_verification": {"mode": "off"}}})
    policy = await builder.build(config)
    assert policy.greylist is None and policy.spf is None and policy.dnsbl is None and policy.recipients is None
    assert policy.relay.relay_domains == {"example.com"}  # a version writes the defaults out


async def test_callout_asks_the_transport_of_the_domain(builder: PolicyBuilder) -> None:
    config = published({"relay_domains": ["a.test", "b.test"],
                        "default_transport": {"host": "10.0.0.1", "port": 2526},
                        "transports": {"b.test": {"host": "2001:db8::25", "port": 24, "protocol": "lmtp"}},
                        "ingress": {"recipient_verification": {"mode": "callout", "callout_cache_s": 60}}})
    policy = await builder.build(config)
    assert policy.recipients is not None
    callout = policy.recipients.sources[0]
    assert isinstance(callout, CalloutRecipients)
    assert callout.default_host == "10.0.0.1:2526" and callout.hosts == {"b.test": "[2001:db8::25]:24"}
    assert callout.positive_ttl_s == callout.negative_ttl_s == 60


async def test_an_ldap_profile_without_its_password_answers_try_later(builder: PolicyBuilder) -> None:
    config = published({"ldap_profiles": {"corp": {"servers": ["ldap://127.0.0.1:1"], "base_dn": "dc=corp",
                                                   "bind_dn": "cn=gw,dc=corp", "password_env": "MAILGW_T_NOPE"}},
                        "ingress": {"recipient_verification": {"mode": "ldap", "ldap_profile": "corp"}}})
    policy = await builder.build(config)
    assert policy.recipients is not None and isinstance(policy.recipients.sources[0], UnusableDirectory)
    assert await policy.recipients.verify("bob@example.com") == (Known.TEMPFAIL, "ldap")
    assert builder.directories.directories == {}


@pytest.mark.parametrize("ingress", [
    {"dnsbl": {"on_dns_failure": "maybe"}},
    {"dnsbl": {"sites": [{"zone": "a.test", "answers": ["10.0.0.1"]}]}},
    {"dnsbl": {"sites": [{"zone": "a.test"}, {"zone": "A.test"}]}},
    {"dnsbl": {"sites": [{"zone": f"z{i}.test"} for i in range(101)]}},
    {"dnsbl": {"sites": [{"zone": "bad zone\r\n.test"}]}},
    {"before_queue_deadline_s": 0}, {"before_queue_deadline_s": 10_000}, {"before_queue": "sometimes"},
    {"greylisting": {"netmask_v4": 33}}, {"greylisting": {"netmask_v6": 4}},
    {"rate_limits": {"max_connections_per_ip": -1}}, {"max_message_bytes": 10},
    {"welcomelist": ["bad entry\x00"]}, {"tls_required_sender_domains": ["-." * 200]},
    {"recipient_verification": {"mode": "ldap"}}, {"recipient_verification": {"mode": "static"}},
    {"recipient_verification": {"reject_code": 250}}, {"unknown_switch": True},
])
def test_malformed_hostile_and_oversized_ingress_sections_are_refused(ingress: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"ingress": ingress})


# --- the running service ------------------------------------------------------------------------------------

async def banner(port: int, source: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    finally:
        writer.close()


async def rcpt(smtp: aiosmtplib.SMTP, address: str) -> int:
    code, _ = await smtp.execute_command(f"RCPT TO:<{address}>".encode())
    return code


def service_settings(kafka: str, redis_url: str, dns: LocalDns, unique: str) -> IngressSettings:
    # The `make run` profile: greylisting off, no pregreet wait; example.com is the environment's relay domain.
    return IngressSettings(kafka_bootstrap=kafka, redis_url=redis_url, redis_prefix=f"t{unique}:",
                           http_port=free_port(), smtp_port=free_port(), greylisting=False, pregreet_delay_s=0,
                           relay_domains=["example.com"], dns_nameservers=[dns.host], dns_port=dns.port)


async def test_relay_domains_and_dnsbl_follow_the_configuration_live(
        fresh_kafka: str, redis_url: str, dns_server: LocalDns, unique: str) -> None:
    zone = f"bl-{unique}.test"
    dns_server.set_zone(zone, ["3.0.0.127 IN A 127.0.0.2"])
    dns_server.apply()
    settings = service_settings(fresh_kafka, redis_url, dns_server, unique)
    runtime = build(settings)
    async with running(runtime):
        port = settings.smtp_port
        assert await banner(port, "127.0.0.3") == "220 mailgw.localdomain mailgw ESMTP"  # no DNSBL yet
        open_session = await client(port)
        await open_session.mail("alice@sender.test")
        assert await rcpt(open_session, "bob@new.test") == 554  # relay denied: not a relay domain yet
        await open_session.rset()
        # A transaction in flight when the configuration changes keeps the policy it started with.
        await open_session.mail("alice@sender.test")
        assert await rcpt(open_session, "carol@example.com") == 250

        config = GatewayConfig.model_validate({
            "relay_domains": ["new.test"],
            "ingress": {"greylisting": {"enabled": False}, "pregreet_delay_s": 0, "spf": False,
                        "dnsbl": {"sites": [{"zone": zone, "weight": 1}]}}})
        await publish_config(runtime, config, expected_version=0, comment="new.test instead of example.com")

        code, _ = await open_session.data(MESSAGE)
        assert code == 250  # the running session was not broken by the change
        # Its next transaction is judged by the new version: new.test in, example.com out.
        await open_session.mail("alice@sender.test")
        assert await rcpt(open_session, "bob@new.test") == 250
        assert await rcpt(open_session, "dave@example.com") == 554
        code, _ = await open_session.data(MESSAGE)
        assert code == 250
        await open_session.quit()
        # The DNSBL is asked from the next connection on.
        assert await banner(port, "127.0.0.3") == \
            f"554 5.7.1 Service unavailable; client host [127.0.0.3] blocked using {zone}"
        assert (await banner(port, "127.0.0.2")).startswith("220 ")

        # Version 2 is well-formed but not valid (an invalid relay domain): version 1 stays in force.
        bad = config.model_dump(mode="json")
        bad["relay_domains"] = ["not a domain"]
        bad["ingress"]["dnsbl"]["sites"] = []
        invalid = new_version(config, 2, "mallory", "").model_copy(update={"content": bad,
                                                                           "sha256": hash_data(bad)})
        await produce(fresh_kafka, topics.MAILGW_CONFIG, invalid.key, invalid.model_dump_json().encode())
        await produce(fresh_kafka, topics.MAILGW_CONFIG, new_version(config, 3, "mallory", "").key,
                      b"\x00\xff" * 1000)
        await wait_config_read(runtime, 2)
        assert runtime.config_follower is not None and runtime.config_follower.version == 1
        smtp = await client(port)
        await smtp.mail("alice@sender.test")
        assert await rcpt(smtp, "erin@new.test") == 250
        await smtp.quit()
        assert (await banner(port, "127.0.0.3")).startswith("554 5.7.1")


async def test_ldap_recipient_verification_from_the_configuration(
        fresh_kafka: str, redis_url: str, dns_server: LocalDns, ldap_server: LocalLdap, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = seed(ldap_server, unique)
    variable = f"MAILGW_T_LDAP_{unique.upper()}"
    monkeypatch.setenv(variable, ldap_server.password)
    settings = service_settings(fresh_kafka, redis_url, dns_server, unique)
    runtime = build(settings)
    async with running(runtime):
        smtp = await client(settings.smtp_port)
        await smtp.mail("x@sender.test")
        assert await rcpt(smtp, "nobody@example.com") == 250  # no verification in the environment
        await smtp.rset()
        config = GatewayConfig.model_validate({
            "ldap_profiles": {"corp": {"servers": [ldap_server.url], "base_dn": base, "bind_dn": ldap_server.admin_dn,
                                       "password_env": variable, "timeout_s": 2}},
            "ingress": {"greylisting": {"enabled": False}, "pregreet_delay_s": 0, "spf": False,
                        "recipient_verification": {"mode": "ldap", "ldap_profile": "corp"}}})
        await publish_config(runtime, config, expected_version=0, comment="verify recipients in LDAP")
        await smtp.mail("x@sender.test")
        assert await rcpt(smtp, "alice@example.com") == 250
        assert await rcpt(smtp, f"sales-{unique}@example.com") == 250
        assert await rcpt(smtp, "nobody@example.com") == 550
        await smtp.quit()


async def test_greylisting_and_before_queue_turned_on_live(
        fresh_kafka: str, redis_url: str, dns_server: LocalDns, unique: str) -> None:
    settings = service_settings(fresh_kafka, redis_url, dns_server, unique)
    runtime = build(settings)
    async with running(runtime):
        assert await runtime.checks["before_queue"]() == (True, "off")
        smtp = await client(settings.smtp_port)
        await smtp.mail("a@sender.test")
        assert await rcpt(smtp, "first@example.com") == 250  # the `make run` profile: no greylisting
        await smtp.rset()
        config = GatewayConfig.model_validate({
            "relay_domains": ["example.com"],
            "ingress": {"pregreet_delay_s": 0, "spf": False, "greylisting": {"delay_s": 60},
                        "before_queue": True, "before_queue_deadline_s": 0.2}})
        await publish_config(runtime, config, expected_version=0, comment="greylisting and before-queue on")
        await smtp.mail("a@sender.test")
        code, message = await smtp.execute_command(b"RCPT TO:<second@example.com>")
        assert (code, message) == (451, "4.7.1 Greylisted, please try again later")
        await smtp.quit()
        # Trusted clients are not greylisted; with no rules service the before-queue deadline accepts the mail.
        trusted = await client(settings.smtp_port, source="127.0.0.1")
        response = await trusted.sendmail("a@sender.test", ["third@example.com"], MESSAGE)
        assert "queued as" in response[1]
        await trusted.quit()
        for _ in range(HANG_GUARD):
            ok, detail = await runtime.checks["before_queue"]()
            if detail == "reading mail.actions":
                break
            await asyncio.sleep(0.01)
        assert (ok, detail) == (True, "reading mail.actions")
