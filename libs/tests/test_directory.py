"""The LDAP directory against a real slapd and a real Redis: lookups, aliases, groups, sync, LDAP down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_libs.config.model import LdapProfile
from mailgw_libs.directory import (
    Directory,
    DirectoryMisconfigured,
    DirectoryProfile,
    DirectoryUnavailable,
    directory_from_config,
    group_filter_of,
    normalise_address,
    profile_from_config,
)


def seed(ldap: LocalLdap, unique: str) -> str:
    """An organisational unit of this test's own with two users, an alias and a group."""
    base = ldap.add_ou(f"t{unique}")
    # The address in `mail` and the primary proxy address differ only in case: one canonical address.
    ldap.add_user("alice", f"Alice@Corp-{unique}.test", base=base, groups=["Staff"],
                  aliases=[f"SMTP:alice@corp-{unique}.test", f"a.smith@corp-{unique}.test"])
    ldap.add_user("bob", f"bob@corp-{unique}.test", base=base)
    return base


def profile(ldap: LocalLdap, base: str, **changes: object) -> DirectoryProfile:
    values: dict[str, object] = {"name": "corp", "uri": ldap.url, "base_dn": base, "bind_dn": ldap.admin_dn,
                                 "password": ldap.password, "group_base_dn": base, "timeout_s": 2.0}
    return DirectoryProfile(**{**values, **changes})  # type: ignore[arg-type]


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
    ldap_server.add_user("carol", f"carol@corp-{unique}.test", base=base)
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


def test_profile_from_config() -> None:
    config = LdapProfile(servers=["ldaps://dc1.example.com", "ldap://dc2.example.com:3389"], base_dn="dc=x",
                         bind_dn="cn=gw,dc=x", password_env="MAILGW_T_LDAP_PW", starttls=True,
                         verify_certificate=False, group_classes=["group", "groupOfNames"],
                         group_member_attributes=["uniqueMember", "member"])
    p = profile_from_config("corp", config, {"MAILGW_T_LDAP_PW": "s3cret"})
    assert p.servers == ("ldaps://dc1.example.com", "ldap://dc2.example.com:3389") and p.uri == p.servers[0]
    assert p.password == "s3cret" and p.bind_dn == "cn=gw,dc=x" and p.starttls and not p.verify_certificate
    assert "s3cret" not in repr(p)
    assert p.member_attribute == "uniqueMember"
    assert p.group_filter == "(|(objectClass=group)(objectClass=groupOfNames))"
    with pytest.raises(DirectoryMisconfigured, match=r"MAILGW_T_LDAP_PW \(password_env\) is not set"):
        profile_from_config("corp", config, {})
    no_password = profile_from_config("corp", config.model_copy(update={"password_env": None}), {})
    assert no_password.password == ""


@pytest.mark.parametrize("classes,expected", [
    ([], "(objectClass=groupOfNames)"), (["posixGroup"], "(objectClass=posixGroup)"),
    (["a", "b"], "(|(objectClass=a)(objectClass=b))"),
    # A hostile class name cannot widen the filter.
    (["*)(cn=*"], "(objectClass=\\2a\\29\\28cn=\\2a)")])
def test_group_filter(classes: list[str], expected: str) -> None:
    assert group_filter_of(classes) == expected


async def test_servers_are_tried_in_order(ldap_server: LocalLdap, redis: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    dead = f"ldap://127.0.0.1:{free_port()}"
    d = Directory(profile(ldap_server, base, uri=dead, fallback_uris=(dead, ldap_server.url)), redis,
                  prefix=f"t{unique}:")
    assert await d.is_member(f"alice@corp-{unique}.test", "staff")
    assert await d.sync() == 3


async def test_starttls_is_never_dropped_silently(ldap_server: LocalLdap, redis: aioredis.Redis,
                                                  unique: str) -> None:
    # The dev slapd offers no TLS: a profile that asks for StartTLS must fail, never bind in clear.
    base = seed(ldap_server, unique)
    d = Directory(profile(ldap_server, base, starttls=True), redis, prefix=f"t{unique}:")
    with pytest.raises(DirectoryUnavailable):
        await d.user_exists(f"alice@corp-{unique}.test")


async def test_directory_from_config(ldap_server: LocalLdap, redis: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    config = LdapProfile(servers=[ldap_server.url], base_dn=base, group_base_dn=base, bind_dn=ldap_server.admin_dn,
                         password_env="MAILGW_T_LDAP_PW", timeout_s=2.0)
    d = directory_from_config("corp", config, redis, prefix=f"t{unique}:",
                              environ={"MAILGW_T_LDAP_PW": ldap_server.password})
    assert await d.groups_of(f"alice@corp-{unique}.test") == ["staff"]
    assert await d.canonical(f"A.SMITH@corp-{unique}.test") == f"alice@corp-{unique}.test"


async def test_sync_loop_survives_redis_and_ldap_outages(ldap_server: LocalLdap, redis: aioredis.Redis,
                                                         unique: str) -> None:
    """The loop keeps going through failed rounds (Redis down, then LDAP down) and syncs once both are back."""
    base = seed(ldap_server, unique)
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    d = Directory(profile(ldap_server, base), dead, prefix=f"t{unique}:")
    task = asyncio.create_task(d.run_sync_loop(3600, retry_min_s=0.05, retry_max_s=0.2))
    try:
        await asyncio.sleep(0.5)  # several rounds against a dead Redis
        assert not task.done() and d.last_sync is None
        ldap_server.stop()
        try:
            d.redis = redis  # Redis is back, LDAP is down
            await asyncio.sleep(0.5)
            assert not task.done() and d.last_sync is None
        finally:
            ldap_server.start()
        for _ in range(300):  # both back: the next round syncs
            if d.last_sync is not None:
                break
            await asyncio.sleep(0.1)
        assert d.last_sync is not None
        assert await d.user_exists(f"bob@corp-{unique}.test")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await dead.aclose()
