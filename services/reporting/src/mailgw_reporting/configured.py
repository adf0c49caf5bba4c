"""The reporting settings in force: the central configuration (`mailgw.config`) over the environment.

Precedence (docs/configuration.md, "Who reads what"): what a published version gives wins; while the topic
holds no version the environment's settings (`MAILGW_REPORTING_*`) stay in force.

From the configuration:

- `quarantine.lifetimes`: `spam_days`, `virus_days`, `attachment_days` for those kinds, `policy_days` for the
  `policy` kind and any other (the rules know no other kind);
- `quarantine.spam_report`: `enabled` (scheduled runs), `at` + `timezone` + `timespan_h` (runs at `at` local
  time and every `timespan_h` hours from it), `link_base_url` (links are `<link_base_url>/link/<purpose>/<token>`:
  the URL at which the readers reach this service's `/quarantine`), `link_secret_env` (the name of the
  environment variable holding the link secret, read from this process's environment), `link_lifetime_days`;
- `notifications.from_address`: the From of the reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import time, timedelta

from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.events import Direction

from .digest import ReportOptions
from .links import LinkSigner
from .schema import Lifetimes
from .settings import ReportingSettings
from .store import Clock, system_clock

log = logging.getLogger("mailgw.reporting.config")

MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class ReportingPlan:
    """Everything a configuration change replaces, prepared before it is put in force."""

    lifetimes: Lifetimes
    options: ReportOptions
    signer: LinkSigner | None  # None: no secret, so no reports and every link refused


def env_options(settings: ReportingSettings) -> ReportOptions:
    return ReportOptions(interval=timedelta(hours=settings.report_interval_h), base_url=settings.report_base_url,
                         sender=settings.report_from, kinds=tuple(settings.report_kinds),
                         max_items=settings.report_max_items, direction=Direction(settings.report_direction))


def env_signer(settings: ReportingSettings, clock: Clock = system_clock) -> LinkSigner | None:
    secret = settings.report_secret.get_secret_value()
    if not secret:
        return None
    return LinkSigner(secret, timedelta(hours=settings.report_link_ttl_h), clock)


def from_environment(settings: ReportingSettings, clock: Clock = system_clock) -> ReportingPlan:
    return ReportingPlan(settings.lifetimes, env_options(settings), env_signer(settings, clock))


def plan_of(config: GatewayConfig, settings: ReportingSettings, clock: Clock = system_clock,
            environ: Mapping[str, str] = os.environ) -> ReportingPlan:
    """The plan of `config` over the environment's (see the module's docstring); `environ` holds the secret."""
    env = from_environment(settings, clock)
    if not is_set(config, "quarantine"):
        lifetimes, options, signer = env.lifetimes, env.options, env.signer
    else:
        days = config.quarantine.lifetimes
        lifetimes = Lifetimes.of(days.policy_days, {"spam": days.spam_days, "virus": days.virus_days,
                                                    "attachment": days.attachment_days, "policy": days.policy_days})
        report = config.quarantine.spam_report
        options = replace(env.options, enabled=report.enabled, interval=timedelta(hours=report.timespan_h),
                          at=time.fromisoformat(report.at), timezone=report.timezone,
                          link_prefix=report.link_base_url)
        secret = environ.get(report.link_secret_env, "")
        signer = None
        if len(secret) >= MIN_SECRET_CHARS:
            signer = LinkSigner(secret, timedelta(days=report.link_lifetime_days), clock)
        else:
            log.warning("no spam reports and no quarantine links: the link secret variable is unset or shorter "
                        f"than {MIN_SECRET_CHARS} characters", extra={"variable": report.link_secret_env})
    if is_set(config, "notifications"):
        options = replace(options, sender=config.notifications.from_address)
    return ReportingPlan(lifetimes, options, signer)
