"""The delivery settings in force: the central configuration (`mailgw.config`) over the environment.

Precedence (docs/configuration.md, "Who reads what"): a value the published configuration gives wins; while
the topic holds no version (the shipped defaults give no field) the environment's setting stays in force, so a
gateway started from the environment alone (devstack, `make run`) keeps working unchanged.

From the configuration: `default_transport`, `transports`, `outbound` (`mode`, `smarthost`, `tls`),
`delivery.tls_ca_file` and `notifications.from_address` (the sender of notifications). The per-domain TLS
policies of outbound mail (`MAILGW_DELIVERY_TLS_POLICIES`) and the MX port have no configuration field and stay
in the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgw_libs.config.model import GatewayConfig, is_set
from mailgw_libs.config.model import Transport as ConfiguredTransport

from .relay import tls_policy_of
from .routing import Endpoint, Route, Router, route_of
from .settings import DeliverySettings, Transport


@dataclass(frozen=True)
class DeliveryPlan:
    """Everything a configuration change replaces, prepared before it is put in force."""

    router: Router
    postmaster: str  # envelope and header sender of notifications


def _transport(configured: ConfiguredTransport) -> Transport:
    return Transport.model_validate(configured.model_dump())


def from_environment(settings: DeliverySettings) -> DeliveryPlan:
    default = Endpoint(settings.relay_host, settings.relay_port,
                       tls=settings.relay_tls or tls_policy_of(settings.relay_starttls, settings.relay_tls_verify),
                       ca_file=settings.tls_ca_file)
    router = Router(default, settings.transports, settings.smarthost, settings.outbound_tls, settings.tls_policies,
                    ca_file=settings.tls_ca_file)
    return DeliveryPlan(router, settings.postmaster)


def plan_of(config: GatewayConfig, settings: DeliverySettings) -> DeliveryPlan:
    """The plan of `config`, field by field over the environment's (see the module's docstring)."""
    env = from_environment(settings)
    ca_file = config.delivery.tls_ca_file if is_set(config, "delivery") else settings.tls_ca_file
    default: Route
    if is_set(config, "default_transport"):
        default = route_of(_transport(config.default_transport), ca_file=ca_file)
    else:
        default = env.router.default
        if default.endpoint is not None:
            default = Route(Endpoint(default.endpoint.host, default.endpoint.port, default.endpoint.protocol,
                                     default.endpoint.tls, ca_file=ca_file))
    transports = ({domain: _transport(t) for domain, t in config.transports.items()}
                  if is_set(config, "transports") else settings.transports)
    smarthost, outbound_tls = settings.smarthost, settings.outbound_tls
    if is_set(config, "outbound"):
        outbound = config.outbound
        smarthost = (_transport(outbound.smarthost)
                     if outbound.mode == "smarthost" and outbound.smarthost is not None else None)
        outbound_tls = outbound.tls
    postmaster = (config.notifications.from_address if is_set(config, "notifications")
                  else settings.postmaster)
    router = Router(default, transports, smarthost, outbound_tls, settings.tls_policies, ca_file=ca_file)
    return DeliveryPlan(router, postmaster)
