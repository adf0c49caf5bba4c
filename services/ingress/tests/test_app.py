"""Wiring: which checks exist and what /readyz reports about Redis."""

from __future__ import annotations

from mailgw_devstack.infra import free_port
from mailgw_ingress.app import build
from mailgw_ingress.settings import IngressSettings


def test_defaults_follow_pmg() -> None:
    settings = IngressSettings()
    assert settings.greylisting and settings.greylist_delay_s == 180
    assert settings.greylist_retry_window_s == 2 * 86400 and settings.greylist_whitelist_s == 36 * 86400


async def test_no_redis_check_when_greylisting_and_rates_are_off() -> None:
    runtime = build(IngressSettings(greylisting=False, http_port=free_port()))
    assert "redis" not in runtime.checks


async def test_redis_down_degrades_but_keeps_ingress_ready() -> None:
    settings = IngressSettings(greylisting=True, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                               http_port=free_port())
    runtime = build(settings)
    ok, detail = await runtime.checks["redis"]()
    assert ok and "degraded" in detail


async def test_redis_check_ok(redis_url: str) -> None:
    runtime = build(IngressSettings(greylisting=True, redis_url=redis_url, http_port=free_port()))
    assert await runtime.checks["redis"]() == (True, "redis ok")
