"""The running rules service follows the configuration: LDAP profiles, scorers and deadline, templates, live."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_devstack.testing import collect, produce, publish_config, running
from mailgw_libs import frames, topics
from mailgw_libs.config.model import GatewayConfig, LdapProfile, Notifications, NotificationTemplate, Scoring
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.events import Direction, Fate, MailAction, MailReceived, SymbolHit, Verdict
from mailgw_rules.app import build
from mailgw_rules.directories import DirectoryManager
from mailgw_rules.settings import RulesSettings

from .test_directories import PASSWORD_ENV, RULES, ldap_profile, move_bob_into_staff, seed


async def send(bootstrap: str, mid: str, rcpts: list[str], scorers: tuple[str, ...] = ("antispam", "antivirus"),
               viruses: list[str] | None = None) -> None:
    env = MailReceived(message_id=mid, received_at=datetime.now(UTC), client_ip="192.0.2.1", mail_from="s@x.org",
                       rcpt_tos=rcpts, direction=Direction.INBOUND, size=5, subject="Hello")
    await produce(bootstrap, topics.MAIL_RECEIVED, mid, frames.pack(env, b"Subject: Hello\r\n\r\nbody"))
    for scorer in scorers:
        verdict = Verdict.of(mid, scorer, [SymbolHit(name="SOME", score=0.5)], 1,
                             viruses if scorer == "antivirus" else None)
        await produce(bootstrap, topics.MAIL_VERDICTS, mid, verdict.model_dump_json().encode())


async def action_of(bootstrap: str, mid: str) -> MailAction:
    records = await collect(bootstrap, topics.MAIL_ACTIONS, 1, key=mid, timeout=30)
    assert records, f"no action for {mid}"
    return frames.unpack(records[0].value, MailAction)[0]


async def test_ldap_group_rule_in_the_running_service(fresh_kafka: str, redis_url: str, unique: str,
                                                      ldap_server: LocalLdap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, ldap_server.password)
    base = seed(ldap_server, unique)
    settings = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, http_port=0, publish_timeout_s=5,
                             directory_prefix=f"t{unique}:dir:", userlists_prefix=f"t{unique}:ul")
    profile = ldap_profile(ldap_server, base)
    gateway = GatewayConfig(rules=RuleSystemConfig.from_yaml(RULES), ldap_profiles={"corp": profile},
                            scoring=Scoring(scorers=["antispam", "antivirus"]))
    await ConfigStore(settings).publish(gateway, 0, "test", "LDAP group rule")
    alice, bob = f"alice@corp-{unique}.test", f"bob@corp-{unique}.test"
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with running(build(settings, redis_prefix=f"t:{unique}:")):
            # The service's sync loop copies the directory into Redis at start.
            for _ in range(500):  # hang guard
                if await client.exists(f"{settings.directory_prefix}corp:gen"):
                    break
                await asyncio.sleep(0.02)
            assert await client.exists(f"{settings.directory_prefix}corp:gen")

            async def fates(mid: str) -> dict[str, Fate]:
                await send(fresh_kafka, mid, [alice, bob])
                return {d.recipient: d.fate for d in (await action_of(fresh_kafka, mid)).decisions}

            assert await fates(f"A{unique}") == {alice: Fate.BLOCK, bob: Fate.ACCEPT}

            # Membership changes; another replica's sync (same Redis cache) makes every replica see it.
            move_bob_into_staff(ldap_server, base)
            other = DirectoryManager(client, prefix=settings.directory_prefix,
                                     environ={PASSWORD_ENV: ldap_server.password}).build({"corp": profile})
            await other.directories["corp"].sync()
            assert await fates(f"B{unique}") == {alice: Fate.ACCEPT, bob: Fate.BLOCK}

            ldap_server.stop()
            try:
                assert await fates(f"C{unique}") == {alice: Fate.ACCEPT, bob: Fate.BLOCK}
            finally:
                ldap_server.start()
    finally:
        await client.aclose()


TEMPLATE_RULES = """
what: {Virus: {objects: [{type: virus}]}}
actions: {Alert: {objects: [{type: notify, to: [admin], template: virus-alert}, {type: block}]}}
rules: [{name: Virus alert, priority: 90, what: [Virus], actions: [Alert]}]
"""


async def test_scorers_deadline_templates_and_admin_address_apply_live(fresh_kafka: str, redis_url: str,
                                                                        unique: str) -> None:
    # The environment's scorers apply while mailgw.config holds no version.
    settings = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, scorers=["antispam", "antivirus"],
                             deadline_s=600.0, http_port=0, publish_timeout_s=5, userlists_prefix=f"t{unique}:ul")
    runtime = build(settings, redis_prefix=f"t:{unique}:")
    async with running(runtime):
        first = f"A{unique}"
        await send(fresh_kafka, first, ["a@example.com"])
        assert (await action_of(fresh_kafka, first)).missing_scorers == []

        # A published version wins over the environment: only antispam awaited, decided after 1 s at the latest.
        config = GatewayConfig(
            rules=RuleSystemConfig.from_yaml(TEMPLATE_RULES),
            scoring=Scoring(scorers=["antispam"], deadline_s=1.0),
            notifications=Notifications(admin_address="security@example.com", templates={
                "virus-alert": NotificationTemplate(subject="Virus in mail from __SENDER__",
                                                    body="__VIRUS_INFO__ stopped by __RULE__")}))
        published = time.perf_counter()
        await publish_config(runtime, config, expected_version=0, comment="scorers, deadline, template")
        print(f"\nconfiguration applied by the running rules service {time.perf_counter() - published:.3f} s "
              "after publish() was called")

        second = f"B{unique}"
        await send(fresh_kafka, second, ["a@example.com"], scorers=("antispam",))
        assert (await action_of(fresh_kafka, second)).missing_scorers == []

        late = f"C{unique}"
        await send(fresh_kafka, late, ["a@example.com"], scorers=())
        action = await action_of(fresh_kafka, late)  # at the 1 s deadline, not the environment's 600 s
        assert action.missing_scorers == ["antispam"] and action.decisions[0].fate is Fate.ACCEPT

        infected = f"D{unique}"
        # antivirus is no longer awaited: its verdict goes first so that it is joined before antispam completes.
        await send(fresh_kafka, infected, ["a@example.com"], scorers=("antivirus", "antispam"), viruses=["Eicar"])
        action = await action_of(fresh_kafka, infected)
        assert action.decisions[0].fate is Fate.BLOCK and action.decisions[0].rule == "Virus alert"
        [note] = action.notifications
        assert note.to == ["security@example.com"]
        assert note.subject == "Virus in mail from s@x.org" and note.text == "Eicar stopped by Virus alert"


async def test_a_message_waiting_for_its_directory_does_not_hold_up_the_others(
        fresh_kafka: str, redis_url: str, unique: str) -> None:
    # A directory that never answered (nothing cached): a message whose rules need it waits; the rest go on.
    settings = RulesSettings(kafka_bootstrap=fresh_kafka, redis_url=redis_url, http_port=0, publish_timeout_s=5,
                             directory_prefix=f"t{unique}:dir:", userlists_prefix=f"t{unique}:ul",
                             sweep_interval_s=0.1)
    rules = RuleSystemConfig.from_yaml("""
who: {Staff: {objects: [{type: ldap_group, profile: corp, group: Staff}]}}
what: {Virus: {objects: [{type: virus}]}}
actions: {Block: {objects: [{type: block}]}}
rules: [{name: Staff viruses, priority: 60, what: [Virus], to: [Staff], actions: [Block]}]
""")
    gone = LdapProfile(servers=[f"ldap://127.0.0.1:{free_port()}"], base_dn="dc=x", timeout_s=0.5)
    gateway = GatewayConfig(rules=rules, ldap_profiles={"corp": gone},
                            scoring=Scoring(scorers=["antispam", "antivirus"], deadline_s=1.0))
    await ConfigStore(settings).publish(gateway, 0, "test", "unreachable directory")
    async with running(build(settings, redis_prefix=f"t:{unique}:")):
        waiting, clean = f"W{unique}", f"K{unique}"
        await send(fresh_kafka, waiting, ["a@example.com"], scorers=("antivirus",), viruses=["Eicar"])
        await send(fresh_kafka, clean, ["a@example.com"], scorers=("antivirus",))
        # Both are due after 1 s (antispam missing), the waiting one first; the clean one is decided all the same.
        action = await action_of(fresh_kafka, clean)
        assert action.decisions[0].fate is Fate.ACCEPT and action.missing_scorers == ["antispam"]
        assert await collect(fresh_kafka, topics.MAIL_ACTIONS, 1, key=waiting, timeout=2) == []
