"""The LDAP directory against a real slapd and a real Redis: lookups, aliases, groups, sync, LDAP down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_libs.directory import Directory, DirectoryProfile, DirectoryUnavailable, normalise_address


def seed(ldap: LocalLdap, unique: str) -> str:
    """An organisational unit of this test's own with two users, an alias and a group."""
    base = f"ou=t{unique},{ldap.base_dn}"
    ldap.add(f"""dn: {base}
objectClass: organizationalUnit
ou: t{unique}

dn: uid=alice,{base}
objectClass: inetOrgPerson
objectClass: mailgwMailRecipient
uid: alice
cn: Alice
sn: A
mail: Alice@Corp-{unique}.test
proxyAddresses: SMTP:alice@corp-{unique}.test
proxyAddresses: smtp:a.smith@corp-{unique}.test

dn: uid=bob,{base}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
mail: bob@corp-{unique}.test

dn: cn=Staff,{base}
objectClass: groupOfNames
cn: Staff
member: uid=alice,{base}
""")
    return base


def profile(ldap: LocalLdap, base: str, **kw: object) -> DirectoryProfile:
    return DirectoryProfile(name="corp", uri=ldap.url, base_dn=base, bind_dn=ldap.admin_dn, password=ldap.password,
                            group_base_dn=base, timeout_s=2.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("text,expected", [
    ("<User@Example.COM>", "user@example.com"), ("a@b.", "a@b"), ("", None), ("noat", None),
    ("a b@c", None), ("x@y\r\nz", None), ("a" * 400 + "@b", None), ("@b", None), ("a@", None),
    ("*@b", "*@b"), ("(cn=*)@b", None)])
def test_address_normalisation(text: str, expected: str | None) -> None:
    assert normalise_address(text) == expected


async def test_live_lookups_aliases_groups(ldap_server: LocalLdap, redis: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    d = Directory(profile(ldap_server, base), redis, prefix=f"t{unique}:")
    assert await d.user_exists(f"alice@corp-{unique}.test")
    assert await d.canonical(f"A.Smith@corp-{unique}.test") == f"alice@corp-{unique}.test"
    assert await d.groups_of(f"a.smith@corp-{unique}.test") == ["staff"]
    assert await d.is_member(f"alice@corp-{unique}.test", "Staff")
    assert await d.is_member(f"alice@corp-{unique}.test", f"cn=staff,{base}")
    assert not await d.is_member(f"bob@corp-{unique}.test", "staff")
    assert not await d.user_exists(f"carol@corp-{unique}.test")
    # LDAP filter injection and hostile input are not users.
    for hostile in ["*@corp.test", f"*)(mail=*@corp-{unique}.test", "\x00@x", "a" * 10_000, ""]:
        assert not await d.user_exists(hostile)
    # Answers are cached: a stopped LDAP still answers for addresses seen before.
    ldap_server.stop()
    try:
        assert await d.user_exists(f"alice@corp-{unique}.test")
        assert not await d.user_exists(f"carol@corp-{unique}.test")
        with pytest.raises(DirectoryUnavailable):
            await d.user_exists(f"dave@corp-{unique}.test")
    finally:
        ldap_server.start()


async def test_full_sync_serves_answers_while_ldap_is_down(ldap_server: LocalLdap, redis: aioredis.Redis,
                                                           unique: str) -> None:
    base = seed(ldap_server, unique)
    d = Directory(profile(ldap_server, base), redis, prefix=f"t{unique}:")
    assert await d.sync() == 3  # alice (two spellings collapse), a.smith, bob
    ldap_server.add(f"""dn: uid=carol,{base}
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: C
mail: carol@corp-{unique}.test
""")
    # Added after the sync: found by a live lookup.
    assert await d.canonical(f"carol@corp-{unique}.test") == f"carol@corp-{unique}.test"
    ldap_server.stop()
    try:
        assert await d.user_exists(f"bob@corp-{unique}.test")
        assert await d.groups_of(f"alice@corp-{unique}.test") == ["staff"]
        assert await d.user_exists(f"carol@corp-{unique}.test")  # live answer cached
        # Not in the last complete sync: unknown, not "unavailable".
        assert not await d.user_exists(f"nobody@corp-{unique}.test")
        with pytest.raises(OSError):
            await d.sync()
        assert await d.user_exists(f"bob@corp-{unique}.test")  # the failed sync left the snapshot in place
    finally:
        ldap_server.start()
    assert await d.sync() == 4


async def test_redis_down_asks_ldap_directly(ldap_server: LocalLdap, unique: str) -> None:
    base = seed(ldap_server, unique)
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        d = Directory(profile(ldap_server, base), dead)
        assert await d.user_exists(f"bob@corp-{unique}.test")
    finally:
        await dead.aclose()


async def test_unreachable_directory_without_cache_is_a_tempfail(redis: aioredis.Redis, unique: str) -> None:
    p = DirectoryProfile(name="gone", uri=f"ldap://127.0.0.1:{free_port()}", base_dn="dc=x", timeout_s=0.5)
    d = Directory(p, redis, prefix=f"t{unique}:")
    with pytest.raises(DirectoryUnavailable):
        await d.user_exists("someone@example.test")
