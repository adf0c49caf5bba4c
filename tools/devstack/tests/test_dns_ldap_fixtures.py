"""The local DNS server and LDAP directory the network-check tests rely on answer like real ones."""

from __future__ import annotations

import subprocess

import dns.asyncresolver
import dns.resolver
import pytest

from mailgw_devstack.dnsserver import LocalDns, txt
from mailgw_devstack.ldapserver import LocalLdap


async def test_zone_records_served(dns_server: LocalDns, unique: str) -> None:
    zone = f"z{unique}.test"
    key = "p=" + "A" * 600
    dns_server.set_zone(zone, [
        "@ IN MX 10 mx1", "mx1 IN A 127.0.0.2",
        f"sel._domainkey IN TXT {txt(key)}",
        "2.0.0.127 IN A 127.0.0.2",
    ])
    dns_server.apply()
    r = dns_server.resolver()
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
    r = dns_server.resolver()
    assert [x.to_text() for x in await r.resolve(zone, "A")] == ["127.0.0.6"]
    dns_server.remove_zone(zone)
    dns_server.apply()
    with pytest.raises((dns.resolver.NoNameservers, dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
        await r.resolve(zone, "A")


def test_ldap_entries_searchable_and_directory_restartable(ldap_server: LocalLdap, unique: str) -> None:
    ldap_server.add_user(f"u{unique}", f"u{unique}@example.test", base=f"ou=people,{ldap_server.base_dn}",
                         aliases=[f"alias-{unique}@example.test"])

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


def test_ldap_users_and_groups_helpers(ldap_server: LocalLdap, unique: str) -> None:
    base = ldap_server.add_ou(f"h{unique}")
    alice = ldap_server.add_user("alice", f"alice-{unique}@example.test", base=base, groups=["Staff", "Sales"],
                                 aliases=[f"SMTP:a-{unique}@example.test", f"b-{unique}@example.test"])
    bob = ldap_server.add_user("bob", f"bob-{unique}@example.test", base=base, groups=["Staff"])
    carol = ldap_server.add_user("carol", f"carol-{unique}@example.test", base=base)

    def entries(search: str, attribute: str) -> list[str]:
        out = subprocess.run(["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", ldap_server.url, "-b", base,
                              search, attribute], capture_output=True, text=True, check=True, timeout=30).stdout
        return sorted(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(f"{attribute}: "))

    assert entries("(cn=Staff)", "member") == sorted([alice, bob])
    assert entries("(cn=Sales)", "member") == [alice]
    assert entries("(uid=alice)", "proxyAddresses") == sorted([f"SMTP:a-{unique}@example.test",
                                                               f"smtp:b-{unique}@example.test"])
    ldap_server.set_members(f"cn=Sales,{base}", [bob, carol])
    assert entries("(cn=Sales)", "member") == sorted([bob, carol])
    with pytest.raises(ValueError):
        ldap_server.add_group("Empty", base=base, members=[])
