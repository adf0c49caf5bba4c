"""Wiring: which checks exist and what /readyz reports about Redis."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailgw_devstack.infra import free_port
from mailgw_ingress.app import build
from mailgw_ingress.settings import IngressSettings


def test_defaults_follow_pmg() -> None:
    settings = IngressSettings()
    assert settings.greylisting and settings.greylist_delay_s == 180
    assert settings.greylist_retry_window_s == 2 * 86400 and settings.greylist_whitelist_s == 36 * 86400


async def test_redis_not_used_when_greylisting_and_rates_are_off() -> None:
    # The check exists (a configuration version may turn greylisting on) and says Redis is not in use.
    runtime = build(IngressSettings(greylisting=False, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                    http_port=free_port()))
    assert await runtime.checks["redis"]() == (True, "not used by the policy in force")


async def test_redis_down_degrades_but_keeps_ingress_ready() -> None:
    settings = IngressSettings(greylisting=True, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                               http_port=free_port())
    runtime = build(settings)
    ok, detail = await runtime.checks["redis"]()
    assert ok and "degraded" in detail


async def test_redis_check_ok(redis_url: str) -> None:
    runtime = build(IngressSettings(greylisting=True, redis_url=redis_url, http_port=free_port()))
    assert await runtime.checks["redis"]() == (True, "redis ok")


def test_network_checks_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_DNS_NAMESERVERS", '["127.0.0.1"]')
    monkeypatch.setenv("MAILGW_DNS_PORT", "5353")
    monkeypatch.setenv("MAILGW_INGRESS_DNSBL_LISTS",
                       '[{"zone": "bl.example", "weight": 2, "answers": ["127.0.0.2"]}, {"zone": "wl.example", '
                       '"weight": -5}]')
    monkeypatch.setenv("MAILGW_INGRESS_SPF", "true")
    monkeypatch.setenv("MAILGW_INGRESS_CLIENT_RDNS_CHECK", "fcrdns")
    monkeypatch.setenv("MAILGW_INGRESS_LDAP_DIRECTORIES",
                       '[{"name": "corp", "uri": "ldap://127.0.0.1:1", "base_dn": "dc=corp"}]')
    monkeypatch.setenv("MAILGW_INGRESS_VALID_RECIPIENTS", '["@example.com"]')
    settings = IngressSettings(http_port=free_port())
    assert settings.dns_nameservers == ["127.0.0.1"] and settings.dns_port == 5353
    assert [(d.zone, d.weight, d.answers) for d in settings.dnsbl_lists] == [
        ("bl.example", 2.0, ["127.0.0.2"]), ("wl.example", -5.0, [])]
    assert settings.uses_dns and settings.uses_redis and settings.client_rdns_check == "fcrdns"
    assert settings.ldap_directories[0].mail_attributes == ["mail", "proxyAddresses"]
    runtime = build(settings)
    assert "smtp" in runtime.checks


def test_bad_check_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGW_INGRESS_CLIENT_RDNS_CHECK", "maybe")
    with pytest.raises(ValidationError):
        IngressSettings()
    monkeypatch.delenv("MAILGW_INGRESS_CLIENT_RDNS_CHECK")
    monkeypatch.setenv("MAILGW_INGRESS_DNSBL_LISTS", '[{"weight": 1}]')
    with pytest.raises(ValidationError):
        IngressSettings()
