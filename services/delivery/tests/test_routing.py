"""Routing: transports per domain, the default relay, the smarthost, MX lookup through a real DNS server
(NSD, devstack's `dns_server`), LMTP, and one transaction per destination."""

from __future__ import annotations

import pytest

from mailgw_delivery.relay import SmtpRelay, Transaction
from mailgw_delivery.routing import NULL_MX, Dispatcher, Endpoint, MxResolver, Route, Router
from mailgw_delivery.settings import Transport
from mailgw_devstack.dnsserver import LocalDns
from mailgw_devstack.infra import free_port
from mailgw_libs import frames, topics
from mailgw_libs.events import DeliveryStatus, Direction
from mailgw_libs.resolver import make_resolver

from .conftest import SinkFactory
from .support import RAW, SinkHandler, TopicReader, action, decision, publish, running, settings_for, wait_until

DEFAULT = Endpoint("127.0.0.1", 2525)


def test_transport_then_default_then_smarthost_then_mx() -> None:
    router = Router(DEFAULT, {"Example.COM": Transport(host="10.0.0.5", port=24, protocol="lmtp", tls="none"),
                              ".corp.test": Transport(host="10.0.0.6")})
    lmtp = Route(Endpoint("10.0.0.5", 24, "lmtp", "none"))
    assert router.route("bob@example.com", Direction.INBOUND) == lmtp
    assert router.route("bob@EXAMPLE.com.", Direction.OUTBOUND) == lmtp  # a transport wins in both directions
    assert router.route("x@a.b.corp.test", Direction.INBOUND).endpoint == Endpoint("10.0.0.6", 25)
    assert router.route("x@corp.test", Direction.INBOUND) == Route(DEFAULT)  # ".corp.test" is subdomains only
    assert router.route("x@elsewhere.org", Direction.INBOUND) == Route(DEFAULT)
    assert router.route("x@elsewhere.org", Direction.OUTBOUND) == Route(mx_domain="elsewhere.org", tls="may")


def test_tls_policies_per_destination() -> None:
    router = Router(DEFAULT, outbound_tls="may", tls_policies={"bank.test": "verify", ".gov.test": "encrypt"})
    assert router.route("a@bank.test", Direction.OUTBOUND).tls == "verify"
    assert router.route("a@x.gov.test", Direction.OUTBOUND).tls == "encrypt"
    smart = Router(DEFAULT, smarthost=Transport(host="smart", port=587, tls="may"), tls_policies={"bank.test": "verify"})
    assert smart.route("a@bank.test", Direction.OUTBOUND).endpoint == Endpoint("smart", 587, tls="verify")
    assert smart.route("a@other.test", Direction.OUTBOUND).endpoint == Endpoint("smart", 587, tls="may")
    by_mx = Router(DEFAULT, {"m.test": Transport(host="Mail.Corp.test.", use_mx=True, tls="encrypt")})
    assert by_mx.route("a@m.test", Direction.INBOUND) == Route(mx_domain="mail.corp.test", tls="encrypt")


def dispatcher(router: Router, dns: LocalDns | None = None, mx_port: int = 25) -> Dispatcher:
    resolver = MxResolver(make_resolver([dns.host] if dns else ["127.0.0.1"], dns.port if dns else free_port(), 2.0))

    def relay_for(endpoint: Endpoint) -> SmtpRelay:
        return SmtpRelay(endpoint.host, endpoint.port, "delivery.test", connect_timeout_s=2.0, command_timeout_s=5.0,
                         tls=endpoint.tls, tls_name=endpoint.tls_name, protocol=endpoint.protocol)

    return Dispatcher(router, resolver, relay_for, mx_port=mx_port)


async def test_each_domain_goes_to_its_transport_in_one_transaction(sinks: SinkFactory) -> None:
    a, b, default = sinks(), sinks(), sinks()
    router = Router(Endpoint("127.0.0.1", default.port),
                    {"a.test": Transport(host="127.0.0.1", port=a.port), "b.test": Transport(host="127.0.0.1", port=b.port)})
    relay = dispatcher(router)
    tagged = RAW.replace(b"Subject: ", b"Subject: [tag] ")
    txs = [Transaction("s@x.test", ("1@a.test", "2@b.test", "3@a.test", "4@c.test"), RAW),
           Transaction("s@x.test", ("5@a.test",), tagged)]
    outcomes = await relay.deliver(txs)
    await relay.close()
    assert [o.recipient for o in outcomes[0]] == ["1@a.test", "2@b.test", "3@a.test", "4@c.test"]
    assert all(o.status is DeliveryStatus.DELIVERED for tx in outcomes for o in tx)
    assert {o.recipient: o.relay for o in outcomes[0]}["2@b.test"] == f"127.0.0.1:{b.port}"
    assert [(r.rcpt_tos, r.content) for r in a.handler.received] == [(["1@a.test", "3@a.test"], RAW),
                                                                     (["5@a.test"], tagged)]
    assert len({r.peer for r in a.handler.received}) == 1  # one session for both copies
    assert [r.rcpt_tos for r in b.handler.received] == [["2@b.test"]]
    assert [r.rcpt_tos for r in default.handler.received] == [["4@c.test"]]


async def test_lmtp_transport_gets_one_reply_per_recipient(sinks: SinkFactory) -> None:
    handler = SinkHandler(lmtp=True, lmtp_replies={"full@l.test": "452 4.2.2 Mailbox full",
                                                   "gone@l.test": "550 5.1.1 No such user"})
    sink = sinks(handler)
    router = Router(DEFAULT, {"l.test": Transport(host="127.0.0.1", port=sink.port, protocol="lmtp", tls="none")})
    relay = dispatcher(router)
    recipients = ("ok1@l.test", "full@l.test", "gone@l.test", "ok2@l.test")
    for _ in range(2):  # the second delivery reuses the LMTP session
        [outcomes] = await relay.deliver([Transaction("s@x.test", recipients, RAW)])
        assert [(o.recipient, o.status, o.code) for o in outcomes] == [
            ("ok1@l.test", DeliveryStatus.DELIVERED, 250), ("full@l.test", DeliveryStatus.DEFERRED, 452),
            ("gone@l.test", DeliveryStatus.BOUNCED, 550), ("ok2@l.test", DeliveryStatus.DELIVERED, 250)]
    await relay.close()
    assert [r.rcpt_tos for r in handler.received] == [["ok1@l.test", "ok2@l.test"]] * 2
    assert handler.received[0].content == RAW


async def test_lmtp_server_that_hangs_up_after_the_data_defers(sinks: SinkFactory) -> None:
    handler = SinkHandler(lmtp=True, lmtp_replies={"b@l.test": "421 4.3.0 going away"})
    sink = sinks(handler)
    relay = SmtpRelay("127.0.0.1", sink.port, "delivery.test", protocol="lmtp", tls="none", command_timeout_s=5.0)
    [outcomes] = await relay.deliver([Transaction("s@x.test", ("a@l.test", "b@l.test"), RAW)])
    assert [o.status for o in outcomes] == [DeliveryStatus.DELIVERED, DeliveryStatus.DEFERRED]


@pytest.fixture
def mx_zone(dns_server: LocalDns, unique: str) -> str:
    """A zone of this test's own: MX, implicit MX, null MX, IDNA names; hosts on 127.0.0.1-3."""
    zone = f"mx{unique}.test"
    dns_server.set_zone(zone, [
        "pref IN MX 20 second", "pref IN MX 10 first",  # first -> 127.0.0.3 (sink B), second -> sink A
        "fallback IN MX 10 dead", "fallback IN MX 20 second",  # dead: nothing listens on 127.0.0.2
        "first IN A 127.0.0.3", "second IN A 127.0.0.1", "dead IN A 127.0.0.2",
        "implicit IN A 127.0.0.1",
        "nullmx IN MX 0 .",
        "noaddr IN MX 10 nowhere",
        "xn--bcher-kva IN MX 10 second",
    ])
    dns_server.apply()
    return zone


async def test_mx_lookup_preference_fallback_implicit_and_null_mx(
        sinks: SinkFactory, dns_server: LocalDns, mx_zone: str) -> None:
    port = free_port()
    sink_a, sink_b = sinks(port=port), sinks(port=port, host="127.0.0.3")
    relay = dispatcher(Router(DEFAULT), dns_server, mx_port=port)
    z = mx_zone
    recipients = (f"p@pref.{z}", f"f@fallback.{z}", f"i@implicit.{z}", f"n@nullmx.{z}", f"x@nosuch.{z}",
                  f"u@noaddr.{z}", f"b@b\u00fccher.{z}")
    [outcomes] = await relay.deliver([Transaction("s@x.test", recipients, RAW, Direction.OUTBOUND)])
    await relay.close()
    got = {o.recipient: o for o in outcomes}
    assert [r.rcpt_tos for r in sink_b.handler.received] == [[f"p@pref.{z}"]]
    assert sorted(r for rec in sink_a.handler.received for r in rec.rcpt_tos) == sorted(
        [f"f@fallback.{z}", f"i@implicit.{z}", f"b@b\u00fccher.{z}"])
    assert got[f"f@fallback.{z}"].relay == f"127.0.0.1:{port}"
    assert got[f"n@nullmx.{z}"].status is DeliveryStatus.BOUNCED and got[f"n@nullmx.{z}"].response == NULL_MX
    assert got[f"x@nosuch.{z}"].status is DeliveryStatus.BOUNCED
    assert got[f"u@noaddr.{z}"].status is DeliveryStatus.DEFERRED  # an MX host without address: try later


async def test_odd_recipient_domains_never_raise(sinks: SinkFactory, dns_server: LocalDns, mx_zone: str) -> None:
    relay = dispatcher(Router(DEFAULT), dns_server, mx_port=free_port())
    odd = ("a@", "a@.", "a@..x", "a@exa mple.test", "a@" + "x" * 300 + ".test", "a@" + "y" * 70 + ".test",
           "a@-.test", "a@\u202e.test", "a@[127.0.0.1]", "a@\u00fc\u00fc\u00fc", "a@x\x00y.test", "a@unknown-zone.test")
    [outcomes] = await relay.deliver([Transaction("s@x.test", odd, RAW, Direction.OUTBOUND)])
    assert [o.recipient for o in outcomes] == list(odd)
    assert all(o.status in (DeliveryStatus.BOUNCED, DeliveryStatus.DEFERRED) for o in outcomes)
    statuses = {o.recipient: o.status for o in outcomes}
    assert statuses["a@exa mple.test"] is DeliveryStatus.BOUNCED
    assert statuses["a@unknown-zone.test"] is DeliveryStatus.DEFERRED  # our NSD refuses it: a DNS failure


async def test_dns_down_defers(sinks: SinkFactory) -> None:
    relay = dispatcher(Router(DEFAULT))  # a resolver pointed at a port nothing answers on
    [outcomes] = await relay.deliver([Transaction("s@x.test", ("a@example.test",), RAW, Direction.OUTBOUND)])
    assert outcomes[0].status is DeliveryStatus.DEFERRED and "MX lookup" in outcomes[0].response


async def test_service_routes_by_domain_and_mx(fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory,
                                              dns_server: LocalDns, mx_zone: str) -> None:
    default, lmtp = sinks(), sinks(SinkHandler(lmtp=True))
    mx_port = free_port()
    mx_sink = sinks(port=mx_port)
    settings = settings_for(
        fresh_kafka, redis_url, default.port, unique, smarthost=None, mx_port=mx_port,
        dns_nameservers=[dns_server.host], dns_port=dns_server.port,
        transports={"lmtp.test": {"host": "127.0.0.1", "port": lmtp.port, "protocol": "lmtp", "tls": "none"}})
    inbound = action(decision("a@lmtp.test"), decision("b@other.test"))
    outbound = action(decision(f"c@pref.{mx_zone}"), decision(f"d@nullmx.{mx_zone}")).model_copy(
        update={"direction": Direction.OUTBOUND})
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            for act in (inbound, outbound):
                await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, RAW), act.message_id)
            await wait_until(lambda: len(reader.results(inbound.message_id)) == 2
                             and len(reader.results(outbound.message_id)) == 2
                             and len(default.handler.received) == 2, what="four results and the DSN")
        finally:
            await reader.stop()
    assert [r.rcpt_tos for r in lmtp.handler.received] == [["a@lmtp.test"]]
    # b, and the DSN for the null MX bounce: a DSN of outbound mail goes back inbound, to the default relay.
    assert sorted(r.rcpt_tos[0] for r in default.handler.received) == ["alice@example.org", "b@other.test"]
    # pref's first MX is 127.0.0.3 where nothing listens on mx_port: the second, 127.0.0.1, takes it.
    assert [r.rcpt_tos for r in mx_sink.handler.received] == [[f"c@pref.{mx_zone}"]]
    results = {r.recipient: r for r in reader.results(outbound.message_id)}
    assert results[f"d@nullmx.{mx_zone}"].status is DeliveryStatus.BOUNCED
    assert results[f"c@pref.{mx_zone}"].relay == f"127.0.0.1:{mx_port}"
