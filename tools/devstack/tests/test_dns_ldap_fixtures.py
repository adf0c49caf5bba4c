"""The local DNS server and LDAP directory the network-check tests rely on answer like real ones."""

from __future__ import annotations

import subprocess

import dns.asyncresolver
import dns.resolver
import pytest

from mailgw_devstack.dnsserver import LocalDns, txt
from mailgw_devstack.ldapserver import LocalLdap


def resolver(server: LocalDns) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.lifetime = 3.0
    return r


async def test_zone_records_served(dns_server: LocalDns, unique: str) -> None:
    zone = f"z{unique}.test"
    key = "p=" + "A" * 600
    dns_server.set_zone(zone, [
        "@ IN MX 10 mx1", "mx1 IN A 127.0.0.2",
        f"sel._domainkey IN TXT {txt(key)}",
        "2.0.0.127 IN A 127.0.0.2",
    ])
    dns_server.apply()
    r = resolver(dns_server)
    mx = await r.resolve(zone, "MX")
    assert [str(x.exchange) for x in mx] == [f"mx1.{zone}."]
    record = await r.resolve(f"sel._domainkey.{zone}", "TXT")
    assert b"".join(record[0].strings).decode() == key
    with pytest.raises(dns.resolver.NXDOMAIN):
        await r.resolve(f"3.0.0.127.{zone}", "A")


async def test_zone_replaced_and_removed(dns_server: LocalDns, unique: str) -> None:
    zone = f"y{unique}.test"
    dns_server.set_zone(zone, ["@ IN A 127.0.0.5"])
    dns_server.apply()
    dns_server.set_zone(zone, ["@ IN A 127.0.0.6"])
    dns_server.apply()
    r = resolver(dns_server)
    assert [x.to_text() for x in await r.resolve(zone, "A")] == ["127.0.0.6"]
    dns_server.remove_zone(zone)
    dns_server.apply()
    with pytest.raises((dns.resolver.NoNameservers, dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
        await r.resolve(zone, "A")


def test_ldap_entries_searchable_and_directory_restartable(ldap_server: LocalLdap, unique: str) -> None:
    ldap_server.add(f"""dn: uid=u{unique},ou=people,{ldap_server.base_dn}
objectClass: inetOrgPerson
objectClass: mailgwMailRecipient
uid: u{unique}
cn: U
sn: U
mail: u{unique}@example.test
proxyAddresses: smtp:alias-{unique}@example.test
""")

    def search() -> str:
        return subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-H", ldap_server.url, "-b", ldap_server.base_dn,
             f"(proxyAddresses=smtp:alias-{unique}@example.test)", "mail"],
            capture_output=True, text=True, check=True, timeout=30).stdout

    assert f"mail: u{unique}@example.test" in search()
    ldap_server.stop()
    with pytest.raises(subprocess.CalledProcessError):
        search()
    ldap_server.start()
    assert f"mail: u{unique}@example.test" in search()
