"""The configuration's LDAP profiles as the rule engine's directory, against a real slapd and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_libs.config.model import LdapProfile
from mailgw_libs.directory import DirectoryMisconfigured, DirectoryUnavailable, profile_from_config
from mailgw_rules.directories import DirectoryManager
from mailgw_rules.engine import RuleEngine
from mailgw_rules.matching import DirectoryLookupFailed

from .support import RAW, SCORERS, config, envelope, verdicts

PASSWORD_ENV = "MAILGW_TEST_LDAP_PASSWORD"


def seed(ldap: LocalLdap, unique: str) -> str:
    """An organisational unit of this test's own: alice (in Staff) and bob (not)."""
    base = ldap.add_ou(f"r{unique}")
    ldap.add_user("alice", f"alice@corp-{unique}.test", base=base, groups=["Staff"])
    ldap.add_user("bob", f"bob@corp-{unique}.test", base=base)
    return base


def ldap_profile(ldap: LocalLdap, base: str, **changes: object) -> LdapProfile:
    values: dict[str, object] = {"servers": [ldap.url], "bind_dn": ldap.admin_dn, "password_env": PASSWORD_ENV,
                                 "base_dn": base, "group_base_dn": base, "timeout_s": 2.0}
    return LdapProfile.model_validate({**values, **changes})


def move_bob_into_staff(ldap: LocalLdap, base: str) -> None:
    ldap.set_members(f"cn=Staff,{base}", [f"uid=bob,{base}"])


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


RULES = """
who: {Staff: {objects: [{type: ldap_group, profile: corp, group: Staff}]},
      Known: {objects: [{type: ldap_user, profile: corp}]}}
actions: {Block: {objects: [{type: block}]}, Tag: {objects: [{type: subject_tag, tag: '[KNOWN]'}]}}
rules:
  - {name: Staff only, priority: 60, to: [Staff], actions: [Block]}
  - {name: Known, priority: 50, to: [Known], actions: [Tag]}
"""


async def test_group_rule_follows_the_directory_through_syncs_and_outages(ldap_server: LocalLdap,
                                                                          redis: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    manager = DirectoryManager(redis, prefix=f"t{unique}:", environ={PASSWORD_ENV: ldap_server.password})
    alice, bob, carol = (f"{n}@corp-{unique}.test" for n in ("alice", "bob", "carol"))
    # Built without sync loops, so the syncs happen exactly here (the service test runs the loops).
    directories = manager.build({"corp": ldap_profile(ldap_server, base)})
    await directories.directories["corp"].sync()
    engine = RuleEngine(config(RULES), directories)

    async def fates() -> dict[str, tuple[str, str]]:
        action = await engine.decide(envelope([alice, bob, carol]), RAW, verdicts(), SCORERS, {})
        return {d.recipient: (d.rule, d.subject_tag) for d in action.decisions}

    assert await fates() == {alice: ("Staff only", ""), bob: ("default", "[KNOWN]"), carol: ("default", "")}

    # A membership change in the directory shows after the next sync (until then the synced answer holds).
    move_bob_into_staff(ldap_server, base)
    assert (await fates())[bob] == ("default", "[KNOWN]")
    await directories.directories["corp"].sync()
    assert await fates() == {alice: ("default", "[KNOWN]"), bob: ("Staff only", ""), carol: ("default", "")}

    # Directory down: the cached (synced) answers keep the rules working.
    ldap_server.stop()
    try:
        assert await fates() == {alice: ("default", "[KNOWN]"), bob: ("Staff only", ""), carol: ("default", "")}
    finally:
        ldap_server.start()


async def test_down_without_any_cached_answer_postpones(ldap_server: LocalLdap, redis: aioredis.Redis,
                                                        unique: str) -> None:
    base = seed(ldap_server, unique)
    manager = DirectoryManager(redis, prefix=f"t{unique}:", environ={PASSWORD_ENV: ldap_server.password})
    # Built but never synced (no loop started): nothing is cached.
    directories = manager.build({"corp": ldap_profile(ldap_server, base)})
    engine = RuleEngine(config(RULES), directories)
    ldap_server.stop()
    try:
        with pytest.raises(DirectoryLookupFailed):
            await engine.decide(envelope([f"alice@corp-{unique}.test"]), RAW, verdicts(), SCORERS, {})
    finally:
        ldap_server.start()


async def test_servers_are_tried_in_order(ldap_server: LocalLdap, redis: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    dead = f"ldap://127.0.0.1:{free_port()}"
    manager = DirectoryManager(redis, prefix=f"t{unique}:", environ={PASSWORD_ENV: ldap_server.password})
    directories = manager.build({"corp": ldap_profile(ldap_server, base, servers=[dead, ldap_server.url])})
    assert await directories.is_member(f"alice@corp-{unique}.test", "staff", "corp")
    assert not await directories.is_member(f"bob@corp-{unique}.test", "staff", "corp")
    # Filter injection, wildcards, control characters and oversized input are nobody.
    for hostile in [f"*)(mail=*@corp-{unique}.test", f"*@corp-{unique}.test", "\x00@x", "a" * 10_000, "",
                    f"alice@corp-{unique}.test\r\nmail: x"]:
        assert not await directories.is_member(hostile, "staff", "corp")
        assert not await directories.user_exists(hostile, "corp")
    assert not await directories.is_member(f"alice@corp-{unique}.test", "*", "corp")


async def test_starttls_is_never_dropped_silently(ldap_server: LocalLdap, redis: aioredis.Redis, unique: str) -> None:
    # The dev slapd offers no TLS: a profile that asks for StartTLS must fail, not bind in clear.
    base = seed(ldap_server, unique)
    manager = DirectoryManager(redis, prefix=f"t{unique}:", environ={PASSWORD_ENV: ldap_server.password})
    directories = manager.build({"corp": ldap_profile(ldap_server, base, starttls=True)})
    with pytest.raises(DirectoryUnavailable):
        await directories.user_exists(f"alice@corp-{unique}.test", "corp")


async def test_missing_password_variable_and_unknown_profile_are_unavailable(redis: aioredis.Redis,
                                                                             unique: str) -> None:
    profile = LdapProfile(servers=["ldap://127.0.0.1:1"], base_dn="dc=x", bind_dn="cn=a,dc=x",
                          password_env=PASSWORD_ENV)
    directories = DirectoryManager(redis, prefix=f"t{unique}:", environ={}).build({"corp": profile})
    with pytest.raises(DirectoryUnavailable, match=f"{PASSWORD_ENV} .password_env. is not set"):
        await directories.is_member("a@x.test", "staff", "corp")
    with pytest.raises(DirectoryUnavailable, match="no LDAP profile 'hr'"):
        await directories.user_exists("a@x.test", "hr")
    with pytest.raises(DirectoryMisconfigured):
        profile_from_config("corp", profile, {})


async def test_apply_rebuilds_only_on_a_profile_change(redis: aioredis.Redis, unique: str) -> None:
    manager = DirectoryManager(redis, prefix=f"t{unique}:", environ={})
    first = LdapProfile(servers=[f"ldap://127.0.0.1:{free_port()}"], base_dn="dc=x", timeout_s=0.5)
    try:
        a = await manager.apply({"corp": first})
        loops = list(manager.tasks)
        assert len(loops) == 1 and not loops[0].done()
        assert await manager.apply({"corp": first.model_copy()}) is a  # same profile: same directory, same loop
        b = await manager.apply({"corp": first.model_copy(update={"timeout_s": 1.0})})
        assert b is not a and loops[0].cancelled() and len(manager.tasks) == 1
        assert (await manager.apply({})).directories == {} and manager.tasks == []
    finally:
        await manager.stop()
