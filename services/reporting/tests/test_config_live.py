"""Reporting follows the central configuration: the plan of a configuration (unit), the report schedule, and
the running service applying published quarantine lifetimes and spam-report settings live (real Kafka, chdb)."""

from __future__ import annotations

import email
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from mailgw_devstack.testing import collect, produce, publish_config, running, wait_config_read
from mailgw_libs import frames, topics
from mailgw_libs.config.document import hash_data
from mailgw_libs.config.model import (
    GatewayConfig,
    Notifications,
    Quarantine,
    QuarantineLifetimes,
    SpamReport,
)
from mailgw_libs.config.versions import new_version
from mailgw_libs.events import MailAction
from mailgw_reporting.app import assemble
from mailgw_reporting.configured import from_environment, plan_of
from mailgw_reporting.digest import ReportOptions
from mailgw_reporting.expiry import expire_once
from mailgw_reporting.settings import ReportingSettings

if TYPE_CHECKING:
    from conftest import Scenario

SECRET_VAR = "MAILGW_TEST_REPORT_LINK_SECRET"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def published(config: GatewayConfig) -> GatewayConfig:
    """The configuration as a reader gets it from the topic: every field written out (so every field given)."""
    return GatewayConfig.model_validate(config.model_dump(mode="json"))


def env_settings(**overrides: Any) -> ReportingSettings:
    values: dict[str, Any] = {"quarantine_days": 9, "quarantine_virus_days": 30, "report_secret": "e" * 20,
                              "report_base_url": "http://api.env.test:8025", "report_from": "env@env.test",
                              "report_interval_h": 6}
    values.update(overrides)
    return ReportingSettings(**values)


def test_without_a_published_version_the_environment_stays_in_force() -> None:
    settings = env_settings()
    plan = plan_of(GatewayConfig(), settings, environ={SECRET_VAR: "c" * 20})
    env = from_environment(settings)
    assert plan.lifetimes == env.lifetimes and plan.lifetimes.days("virus") == 30 and plan.lifetimes.days("x") == 9
    assert plan.options == env.options and plan.options.sender == "env@env.test" and plan.options.at is None
    assert plan.signer is not None and plan.signer.ttl == timedelta(hours=settings.report_link_ttl_h)
    assert plan.options.link_url("release", "T") == "http://api.env.test:8025/quarantine/link/release/T"


def test_a_published_version_wins_over_the_environment() -> None:
    config = published(GatewayConfig(
        quarantine=Quarantine(
            lifetimes=QuarantineLifetimes(spam_days=2, virus_days=14, attachment_days=3, policy_days=5),
            spam_report=SpamReport(enabled=False, at="07:30", timezone="Europe/Vienna", timespan_h=12,
                                   link_base_url="https://mail.corp.test/quarantine/", link_secret_env=SECRET_VAR,
                                   link_lifetime_days=3)),
        notifications=Notifications(from_address="reports@corp.test")))
    plan = plan_of(config, env_settings(), environ={SECRET_VAR: "c" * 20})
    assert [plan.lifetimes.days(k) for k in ("spam", "virus", "attachment", "policy", "other")] == [2, 14, 3, 5, 5]
    options = plan.options
    assert (options.enabled, options.at, options.timezone, options.interval) == (
        False, time(7, 30), "Europe/Vienna", timedelta(hours=12))
    assert options.sender == "reports@corp.test"
    assert options.link_url("delete", "T") == "https://mail.corp.test/quarantine/link/delete/T"
    assert plan.signer is not None and plan.signer.ttl == timedelta(days=3)


@pytest.mark.parametrize("secret", [None, "", "short"])
def test_without_a_usable_secret_there_is_no_signer(secret: str | None) -> None:
    config = published(GatewayConfig(quarantine=Quarantine(spam_report=SpamReport(link_secret_env=SECRET_VAR))))
    environ = {} if secret is None else {SECRET_VAR: secret}
    # The environment's own secret does not apply once the configuration names the variable.
    assert plan_of(config, env_settings(), environ=environ).signer is None


def test_the_schedule_runs_at_the_configured_local_time() -> None:
    daily = ReportOptions(at=time(0, 5), timezone="Europe/Vienna")
    # 00:05 in Vienna in winter is 23:05 UTC of the day before.
    assert daily.latest_slot(datetime(2031, 1, 10, 23, 10, tzinfo=UTC)) == datetime(2031, 1, 10, 23, 5, tzinfo=UTC)
    assert daily.latest_slot(datetime(2031, 1, 10, 23, 0, tzinfo=UTC)) == datetime(2031, 1, 9, 23, 5, tzinfo=UTC)
    every_6h = ReportOptions(at=time(1, 0), interval=timedelta(hours=6))
    assert every_6h.latest_slot(datetime(2031, 1, 10, 0, 30, tzinfo=UTC)) == datetime(2031, 1, 9, 19, tzinfo=UTC)
    assert every_6h.latest_slot(datetime(2031, 1, 10, 13, 0, tzinfo=UTC)) == datetime(2031, 1, 10, 13, tzinfo=UTC)
    assert ReportOptions().latest_slot(datetime(2031, 1, 10, tzinfo=UTC)) is None


@pytest.mark.parametrize("report", [{"at": 630}, {"at": "25:00"}, {"at": "7:30"}, {"timezone": "Mars/Olympus"},
                                    {"timezone": "../../etc/passwd"}, {"link_base_url": "javascript:alert(1)"},
                                    {"link_base_url": "https://x.test/\r\nX-Injected: 1"},
                                    {"link_base_url": "https://" + "a" * 3000}, {"link_secret_env": "lower case"},
                                    {"link_lifetime_days": 0}, {"timespan_h": 10_000}, {"unknown": 1}])
def test_a_hostile_spam_report_section_is_refused(report: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"quarantine": {"spam_report": report}})


@pytest.mark.parametrize("lifetimes", [{"spam_days": 0}, {"virus_days": 100_000}, {"policy_days": "x"},
                                       {"spam_days": -1}, {"other_days": 3}])
def test_malformed_lifetimes_are_refused(lifetimes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"quarantine": {"lifetimes": lifetimes}})


async def test_published_quarantine_settings_apply_live(
        fresh_kafka: str, chdb_url: str, redis_url: str, scenario: Scenario, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = scenario
    bob = s.rcpt("bob")
    old = s.received([bob])
    s.quarantine(old, [bob], s.raw("old spam"), kind="spam", t=0)
    clock = Clock(s.at(0) + timedelta(days=3))
    monkeypatch.setenv(SECRET_VAR, "s" * 32)
    settings = ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0,
                                 redis_url=redis_url, database=f"cfg_{unique}", quarantine_days=7)
    service = assemble(settings, clock=clock, background=False)
    assert service.reporter.signer is None  # no secret in the environment's settings
    async with running(service.runtime):
        store = service.store
        await s.store_all(store)
        assert await expire_once(store) == 0  # 3 days old, 7 days of lifetime

        config = GatewayConfig(quarantine=Quarantine(
            lifetimes=QuarantineLifetimes(spam_days=2),
            spam_report=SpamReport(link_base_url="https://mail.corp.test/q", link_secret_env=SECRET_VAR)))
        await publish_config(service.runtime, config, expected_version=0, comment="spam is kept 2 days")

        assert store.lifetimes.days("spam") == 2
        engine = await store.run("engine", lambda c: c.query(
            "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = 'quarantine'",
            parameters={"d": store.database}).result_rows[0][0])
        assert store.lifetimes.expires_sql(ttl=True) in engine  # the TTL followed too
        assert await expire_once(store) == 1  # the expiry follows at once

        # The report is on now (the configured secret variable is set) and its links use the configured URL.
        new = s.received([bob], subject="new spam")
        s.events.clear()
        s.quarantine(new, [bob], s.raw("new spam"), kind="spam", t=3 * 86400 - 3600)
        await s.store_all(store)
        assert await service.reporter.run_once() == {bob: 1}
        [record] = await collect(fresh_kafka, topics.MAIL_ACTIONS, 1)
        _, report = frames.unpack(record.value or b"", MailAction)
        text = email.message_from_bytes(report).get_payload()[0].get_payload(decode=True).decode()
        assert "https://mail.corp.test/q/link/release/" in text

        # A well-formed but invalid version 2: version 1 stays in force.
        bad = published(config).model_dump(mode="json")
        bad["quarantine"]["lifetimes"]["spam_days"] = 0
        invalid = new_version(config, 2, "mallory", "").model_copy(update={"content": bad, "sha256": hash_data(bad)})
        await produce(fresh_kafka, topics.MAILGW_CONFIG, invalid.key, invalid.model_dump_json().encode())
        await wait_config_read(service.runtime, 2)
        assert service.runtime.config_follower is not None and service.runtime.config_follower.version == 1
        assert store.lifetimes.days("spam") == 2 and service.reporter.signer is not None
