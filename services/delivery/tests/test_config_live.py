"""Delivery follows the central configuration: the plan of a configuration (unit), and the running service
re-routing on a published version without a restart (real Kafka, real SMTP sinks)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mailgw_delivery.configured import from_environment, plan_of
from mailgw_delivery.routing import Endpoint, Route
from mailgw_delivery.settings import DeliverySettings
from mailgw_devstack.testing import produce, publish_config, wait_config_read
from mailgw_libs import frames, topics
from mailgw_libs.config.document import hash_data
from mailgw_libs.config.model import Delivery, GatewayConfig, Notifications, Outbound, Transport
from mailgw_libs.config.versions import new_version
from mailgw_libs.events import Direction

from .conftest import SinkFactory
from .support import RAW, TopicReader, action, decision, publish, running, settings_for, wait_until


def env_settings(**overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {"relay_host": "10.0.0.1", "relay_port": 2525, "relay_tls": "none",
                              "transports": {"env.test": {"host": "10.0.0.2", "port": 24, "protocol": "lmtp"}},
                              "smarthost": {"host": "smart.env.test", "port": 587},
                              "tls_ca_file": "/etc/env-ca.pem", "postmaster": "pm@env.test"}
    values.update(overrides)
    return DeliverySettings(**values)


def published(config: GatewayConfig) -> GatewayConfig:
    """The configuration as a reader gets it from the topic: every field written out (so every field given)."""
    return GatewayConfig.model_validate(config.model_dump(mode="json"))


def test_without_a_published_version_the_environment_stays_in_force() -> None:
    settings = env_settings()
    plan = plan_of(GatewayConfig(), settings)
    env = from_environment(settings)
    assert plan.postmaster == env.postmaster == "pm@env.test"
    router = plan.router
    assert router.route("a@elsewhere.test", Direction.INBOUND) == Route(
        Endpoint("10.0.0.1", 2525, "smtp", "none", ca_file="/etc/env-ca.pem"))
    assert router.route("a@env.test", Direction.INBOUND).endpoint == Endpoint(
        "10.0.0.2", 24, "lmtp", "may", ca_file="/etc/env-ca.pem")
    assert router.route("a@far.test", Direction.OUTBOUND).endpoint == Endpoint(
        "smart.env.test", 587, ca_file="/etc/env-ca.pem")


def test_a_published_version_wins_over_the_environment() -> None:
    config = published(GatewayConfig(
        default_transport=Transport(host="mail.corp.test", port=26, tls="verify"),
        transports={"lmtp.test": Transport(host="10.1.0.5", port=24, protocol="lmtp", tls="none"),
                    "mx.test": Transport(host="mail.mx.test", use_mx=True, tls="encrypt")},
        outbound=Outbound(mode="mx", tls="encrypt"),
        delivery=Delivery(tls_ca_file="/etc/mailgw/ca.pem"),
        notifications=Notifications(from_address="mailer@corp.test")))
    plan = plan_of(config, env_settings())
    ca = "/etc/mailgw/ca.pem"
    assert plan.postmaster == "mailer@corp.test"
    router = plan.router
    assert router.route("a@other.test", Direction.INBOUND) == Route(Endpoint("mail.corp.test", 26, "smtp", "verify",
                                                                             ca_file=ca))
    assert router.route("a@lmtp.test", Direction.INBOUND).endpoint == Endpoint("10.1.0.5", 24, "lmtp", "none",
                                                                              ca_file=ca)
    assert router.route("a@mx.test", Direction.INBOUND) == Route(mx_domain="mail.mx.test", tls="encrypt", ca_file=ca)
    # The environment's transport is gone; the smarthost too (mode mx): outbound mail goes by MX.
    assert router.route("a@env.test", Direction.INBOUND).endpoint == Endpoint("mail.corp.test", 26, "smtp", "verify",
                                                                             ca_file=ca)
    assert router.route("a@far.test", Direction.OUTBOUND) == Route(mx_domain="far.test", tls="encrypt", ca_file=ca)


def test_a_published_smarthost_and_the_shipped_defaults_of_a_version() -> None:
    config = published(GatewayConfig(outbound=Outbound(mode="smarthost", smarthost=Transport(host="relay.isp.test",
                                                                                            port=587, tls="verify"))))
    router = plan_of(config, env_settings()).router
    assert router.route("a@far.test", Direction.OUTBOUND).endpoint == Endpoint("relay.isp.test", 587, tls="verify")
    # A version writes the defaults out: default transport 127.0.0.1:25, no CA file, no transports.
    assert router.route("a@env.test", Direction.INBOUND).endpoint == Endpoint("127.0.0.1", 25, tls="may")


@pytest.mark.parametrize("path", ["relative/ca.pem", "/etc/ca\n.pem", "/etc/\x00ca.pem", "/" + "a" * 5000])
def test_a_hostile_ca_file_is_refused(path: str) -> None:
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"delivery": {"tls_ca_file": path}})


@pytest.mark.parametrize("transport", [{"host": "bad host"}, {"host": "x", "port": 0}, {"host": "x", "tls": "maybe"},
                                       {"host": "x", "protocol": "uucp"}, {"host": "a" * 300}, {"host": "x", "z": 1}])
def test_a_malformed_transport_is_refused(transport: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"transports": {"example.com": transport}})


async def test_a_published_transport_takes_the_next_message_without_restart(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    old, new, never = sinks(), sinks(), sinks()
    async with running(settings_for(fresh_kafka, redis_url, old.port, unique)) as runtime:
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()

        async def send(recipient: str) -> None:
            act = action(decision(recipient))
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(act.message_id)) == 1, what=f"the result for {recipient}")

        try:
            await send("bob@new.test")  # the environment's relay while the topic is empty
            assert len(old.handler.deliveries_to("bob@new.test")) == 1

            config = GatewayConfig(
                relay_domains=["new.test", "example.com"],
                default_transport=Transport(host="127.0.0.1", port=old.port, tls="none"),
                transports={"new.test": Transport(host="127.0.0.1", port=new.port, tls="none")},
                outbound=Outbound(mode="smarthost", smarthost=Transport(host="127.0.0.1", port=old.port, tls="none")))
            await publish_config(runtime, config, expected_version=0, comment="new.test has its own server")
            await send("carol@new.test")
            await send("dave@example.com")
            assert len(new.handler.deliveries_to("carol@new.test")) == 1
            assert len(old.handler.deliveries_to("dave@example.com")) == 1

            # Version 2 is well-formed but not valid (an invalid relay domain): version 1 stays in force.
            bad = config.model_dump(mode="json")
            bad["transports"]["new.test"]["port"] = never.port
            bad["relay_domains"] = ["not a domain"]
            invalid = new_version(config, 2, "mallory", "").model_copy(update={"content": bad,
                                                                               "sha256": hash_data(bad)})
            await produce(fresh_kafka, topics.MAILGW_CONFIG, invalid.key, invalid.model_dump_json().encode())
            garbage = new_version(config, 3, "mallory", "").key
            await produce(fresh_kafka, topics.MAILGW_CONFIG, garbage, b"\x00\xff" * 1000)
            await wait_config_read(runtime, 2)
            await send("eve@new.test")
            assert len(new.handler.deliveries_to("eve@new.test")) == 1
            assert never.handler.received == []
            assert runtime.config_follower is not None and runtime.config_follower.version == 1
        finally:
            await reader.stop()
