"""The shared resolver answers from its in-process cache within the record's TTL (real NSD)."""

from __future__ import annotations

from mailgw_devstack.dnsserver import LocalDns
from mailgw_libs.resolver import make_resolver, make_sync_resolver


async def test_answers_are_cached_for_their_ttl(dns_server: LocalDns, unique: str) -> None:
    zone = f"cache{unique}.test"
    dns_server.set_zone(zone, ["@ IN A 127.0.0.5"])
    dns_server.apply()
    cached = make_resolver([dns_server.host], dns_server.port, 3.0)
    sync_cached = make_sync_resolver([dns_server.host], dns_server.port, 3.0)
    assert [r.to_text() for r in await cached.resolve(zone, "A")] == ["127.0.0.5"]
    assert [r.to_text() for r in sync_cached.resolve(zone, "A")] == ["127.0.0.5"]

    dns_server.set_zone(zone, ["@ IN A 127.0.0.6"])  # the zone's TTL is 30 s
    dns_server.apply()
    assert [r.to_text() for r in await cached.resolve(zone, "A")] == ["127.0.0.5"]
    assert [r.to_text() for r in sync_cached.resolve(zone, "A")] == ["127.0.0.5"]
    fresh = make_resolver([dns_server.host], dns_server.port, 3.0)
    assert [r.to_text() for r in await fresh.resolve(zone, "A")] == ["127.0.0.6"]
    dns_server.remove_zone(zone)
    dns_server.apply()
