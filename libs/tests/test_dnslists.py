"""DNS lists against a real DNS server (NSD from the devstack) and a real Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw_devstack.dnsserver import LocalDns
from mailgw_devstack.infra import free_port
from mailgw_libs.dnslists import (
    DnsList,
    DnsListChecker,
    domain_query,
    failures,
    listed,
    reversed_ip,
    score,
)
from mailgw_libs.resolver import make_resolver


def test_reversed_query_labels() -> None:
    assert reversed_ip("192.0.2.99") == "99.2.0.192"
    assert reversed_ip("::ffff:192.0.2.99") == "99.2.0.192"
    assert reversed_ip("2001:db8::1") == ".".join(reversed("20010db8" + "0" * 23 + "1"))
    with pytest.raises(ValueError):
        reversed_ip("not an ip")


@pytest.mark.parametrize("name", ["", "a" * 300, "bad domain.com", "x\x00y.com", "a..b", "evil.com\r\nX: y",
                                  "<script>.com", ("a" * 64) + ".com"])
def test_hostile_domains_are_not_looked_up(name: str) -> None:
    assert domain_query(name) is None


def test_domain_query_normalises() -> None:
    assert domain_query("Example.COM.") == "example.com"
    assert domain_query("bücher.example") == "xn--bcher-kva.example"


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_domain_query_never_raises(text: str) -> None:
    result = domain_query(text)
    assert result is None or (len(result) <= 253 and result == result.lower())


def test_list_zone_validated() -> None:
    with pytest.raises(ValueError):
        DnsList("bad zone")
    with pytest.raises(ValueError):
        DnsList("zone.test", kind="url")  # type: ignore[arg-type]


async def test_ip_lists_weights_codes_and_allowlist(dns_server: LocalDns, unique: str, redis_url: str) -> None:
    bl1, bl2, wl = f"bl1-{unique}.test", f"bl2-{unique}.test", f"wl-{unique}.test"
    dns_server.set_zone(bl1, ["2.0.0.127 IN A 127.0.0.2", "2.0.0.127 IN A 127.0.0.4", "3.0.0.127 IN A 127.0.0.10"])
    dns_server.set_zone(bl2, ["2.0.0.127 IN A 127.0.0.3",
                              "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN A 127.0.0.2"])
    dns_server.set_zone(wl, ["5.0.0.127 IN A 127.0.10.1"])
    dns_server.apply()
    lists = [DnsList(bl1, 2.0, answers=frozenset({"127.0.0.2", "127.0.0.4"})), DnsList(bl2, 1.5),
             DnsList(wl, -5.0), DnsList(f"dbl-{unique}.test", 3.0, kind="domain")]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        checker = DnsListChecker(dns_server.resolver(2.0), redis, cache_ttl=60, timeout=2.0, prefix=f"t{unique}:")
        hits = await checker.check_ip("127.0.0.2", lists)
        assert {h.dnslist.zone: h.codes for h in hits} == {bl1: ("127.0.0.2", "127.0.0.4"), bl2: ("127.0.0.3",)}
        assert score(hits) == 3.5 and not failures(hits)
        # 127.0.0.10 is not one of the codes bl1 counts.
        assert await checker.check_ip("127.0.0.3", lists) == []
        allowed = await checker.check_ip("127.0.0.5", lists)
        assert [h.dnslist.zone for h in allowed] == [wl] and score(allowed) == -5.0
        v6 = await checker.check_ip("2001:db8::1", lists)
        assert [h.dnslist.zone for h in v6] == [bl2]
        # Cached: positive and negative answers survive the zones going away.
        assert await redis.get(f"t{unique}:2.0.0.127.{bl1}") == b"127.0.0.2,127.0.0.4"
        assert await redis.get(f"t{unique}:3.0.0.127.{bl2}") == b""
        dns_server.remove_zone(bl1)
        dns_server.remove_zone(bl2)
        dns_server.apply()
        again = await checker.check_ip("127.0.0.2", lists)
        assert score(again) == 3.5
        uncached = DnsListChecker(dns_server.resolver(2.0), None, timeout=2.0)
        assert score(await uncached.check_ip("127.0.0.2", lists)) == 0
    finally:
        await redis.aclose()


async def test_domain_lists(dns_server: LocalDns, unique: str) -> None:
    dbl = f"dbl-{unique}.test"
    dns_server.set_zone(dbl, ["spammer.example IN A 127.0.1.2", "xn--bcher-kva.example IN A 127.0.1.3"])
    dns_server.apply()
    lists = [DnsList(dbl, 1.0, kind="domain"), DnsList(f"ipbl-{unique}.test", 1.0)]
    checker = DnsListChecker(dns_server.resolver(2.0), None)
    hits = await checker.check_domain("Spammer.Example.", lists)
    assert [(h.dnslist.zone, h.codes) for h in hits] == [(dbl, ("127.0.1.2",))]
    assert len(await checker.check_domain("bücher.example", lists)) == 1
    assert await checker.check_domain("clean.example", lists) == []
    assert await checker.check_domain("a b\r\n.example", lists) == []


async def test_answers_outside_loopback_and_refusals(dns_server: LocalDns, unique: str) -> None:
    zone = f"odd-{unique}.test"
    dns_server.set_zone(zone, ["2.0.0.127 IN A 192.0.2.1", "3.0.0.127 IN A 127.255.255.254"])
    dns_server.apply()
    checker = DnsListChecker(dns_server.resolver(2.0), None)
    assert await checker.check_ip("127.0.0.2", [DnsList(zone)]) == []
    refused = await checker.check_ip("127.0.0.3", [DnsList(zone)])
    assert len(refused) == 1 and refused[0].failed and "refused" in refused[0].error and score(refused) == 0


async def test_dns_down_is_a_failure_not_a_clean_answer(unique: str) -> None:
    dead = make_resolver(["127.0.0.1"], free_port(), timeout=0.3)
    checker = DnsListChecker(dead, None, timeout=0.3)
    results = await checker.check_ip("127.0.0.2", [DnsList(f"a-{unique}.test"), DnsList(f"b-{unique}.test")])
    assert len(failures(results)) == 2 and listed(results) == []


async def test_unanswered_zone_is_a_failure(dns_server: LocalDns, unique: str) -> None:
    # A zone this server is not authoritative for: REFUSED, i.e. no usable answer.
    checker = DnsListChecker(dns_server.resolver(2.0), None, timeout=1.0)
    results = await checker.check_ip("127.0.0.2", [DnsList(f"nowhere-{unique}.invalid")])
    assert len(results) == 1 and results[0].failed


async def test_redis_down_falls_back_to_dns(dns_server: LocalDns, unique: str) -> None:
    zone = f"bl-{unique}.test"
    dns_server.set_zone(zone, ["2.0.0.127 IN A 127.0.0.2"])
    dns_server.apply()
    dead_redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        checker = DnsListChecker(dns_server.resolver(2.0), dead_redis)
        hits = await checker.check_ip("127.0.0.2", [DnsList(zone)])
        assert [h.codes for h in hits] == [("127.0.0.2",)]
        assert checker.breaker.is_open()
    finally:
        await dead_redis.aclose()
