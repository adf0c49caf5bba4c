"""Configuration versions on a real broker (Tansu): publish, history, concurrency, invalid records, live follow."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord

from mailgw_devstack.infra import free_port, start_tansu
from mailgw_devstack.testing import collect, produce
from mailgw_libs import topics
from mailgw_libs.config.document import hash_data, load_text
from mailgw_libs.config.follower import ConfigFollower
from mailgw_libs.config.model import GatewayConfig, shipped_defaults
from mailgw_libs.config.store import ConfigConflict, ConfigStore, ensure_config_topic
from mailgw_libs.config.versions import VersionLog, new_version
from mailgw_libs.settings import ServiceSettings

HANG_GUARD_S = 30.0


def settings_for(bootstrap: str) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap=bootstrap)


def config_with(*domains: str) -> GatewayConfig:
    return load_text(f"relay_domains: {json.dumps(list(domains))}")


async def test_empty_topic_means_shipped_defaults(fresh_kafka: str) -> None:
    store = ConfigStore(settings_for(fresh_kafka))
    assert (await store.read()).version == 0
    follower = ConfigFollower(settings_for(fresh_kafka))
    try:
        await asyncio.wait_for(follower.catch_up(), HANG_GUARD_S)
        assert follower.caught_up and follower.version == 0
        assert follower.config == shipped_defaults()
    finally:
        await follower.stop()


async def test_the_topic_is_compacted_with_one_partition(fresh_kafka: str) -> None:
    await ensure_config_topic(settings_for(fresh_kafka))
    admin = AIOKafkaAdminClient(bootstrap_servers=fresh_kafka)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topics.MAILGW_CONFIG)])
        entries = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
        assert entries.get("cleanup.policy") == "compact"
        metadata = await admin.describe_topics([topics.MAILGW_CONFIG])
        assert len(metadata[0]["partitions"]) == 1
    finally:
        await admin.close()


async def test_versions_are_kept_in_order_with_their_metadata(fresh_kafka: str) -> None:
    store = ConfigStore(settings_for(fresh_kafka))
    first = await store.publish(config_with("a.example"), 0, "alice@host", "first")
    second = await store.publish(config_with("a.example", "b.example"), 1, "bob@host", "add b")
    versions = await store.read()
    assert versions.version == 2
    assert [a.record.version for a in versions.history] == [1, 2]
    assert [a.record.author for a in versions.history] == ["alice@host", "bob@host"]
    assert [a.record.comment for a in versions.history] == ["first", "add b"]
    assert versions.history[0].record.sha256 == first.record.sha256 != second.record.sha256
    assert versions.current_config is not None and versions.current_config.relay_domains == ["a.example", "b.example"]
    # Every version has its own key: compaction keeps them all.
    assert len({a.record.key for a in versions.history}) == 2


async def test_rollback_publishes_old_content_as_a_new_version(fresh_kafka: str) -> None:
    store = ConfigStore(settings_for(fresh_kafka))
    await store.publish(config_with("a.example"), 0, "alice", "")
    await store.publish(config_with("b.example"), 1, "alice", "")
    old = (await store.read()).find(1)
    assert old is not None and old.config is not None
    third = await store.publish(old.config, 2, "alice", "rollback", rollback_of=1)
    assert third.record.version == 3 and third.record.rollback_of == 1
    assert third.record.sha256 == old.record.sha256
    assert (await store.read()).current_config == config_with("a.example")


async def test_a_stale_apply_is_refused(fresh_kafka: str) -> None:
    store = ConfigStore(settings_for(fresh_kafka))
    await store.publish(config_with("a.example"), 0, "alice", "")
    # Bob looked at version 0 before Alice published version 1.
    with pytest.raises(ConfigConflict, match="the current version is 1, not 0"):
        await store.publish(config_with("b.example"), 0, "bob", "")
    assert (await store.read()).version == 1


async def test_concurrent_applies_exactly_one_wins(fresh_kafka: str) -> None:
    store = ConfigStore(settings_for(fresh_kafka))
    results = await asyncio.gather(
        *(store.publish(config_with(f"d{i}.example"), 0, f"admin{i}", "") for i in range(4)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and all(isinstance(r, ConfigConflict) for r in losers), results
    versions = await store.read()
    assert versions.version == 1 and versions.current is not None
    assert versions.current.record.writer_id == winners[0].record.writer_id


async def test_the_first_of_two_racing_records_wins_for_every_reader(fresh_kafka: str) -> None:
    """Two writers that passed the pre-check at the same time: the log order decides, the same way everywhere."""
    settings = settings_for(fresh_kafka)
    await ensure_config_topic(settings)
    first = new_version(config_with("first.example"), 1, "a", "")
    second = new_version(config_with("second.example"), 1, "b", "")
    for record in (first, second):
        await produce(fresh_kafka, topics.MAILGW_CONFIG, record.key, record.model_dump_json().encode())
    versions = await ConfigStore(settings).read()
    assert versions.version == 1 and versions.current is not None
    assert versions.current.record.writer_id == first.writer_id
    assert any("does not follow version 1" in reason for _o, _k, reason in versions.ignored)


async def test_invalid_records_are_ignored_and_the_previous_config_stays(fresh_kafka: str) -> None:
    settings = settings_for(fresh_kafka)
    store = ConfigStore(settings)
    await store.publish(config_with("good.example"), 0, "alice", "")
    wrong_hash = new_version(config_with("y.example"), 2, "mallory", "").model_copy(update={"sha256": "0" * 64})
    skipping = new_version(config_with("z.example"), 5, "mallory", "")
    hostile = [
        ("version/0000000002/x", b"\x00\xff not json"),
        ("version/0000000002/y", b'{"version": 2}'),
        ("unrelated-key", b"{}"),
        (wrong_hash.key, wrong_hash.model_dump_json().encode()),
        (skipping.key, skipping.model_dump_json().encode()),
        ("version/0000000002/stolen-key", new_version(config_with("w.example"), 2, "m", "").model_dump_json().encode()),
        ("version/0000000002/deep", b"[" * 100_000 + b"]" * 100_000),
        ("version/0000000002/big", b'{"content": "' + b"x" * 5_000_000 + b'"}'),
    ]
    for key, value in hostile:
        await produce(fresh_kafka, topics.MAILGW_CONFIG, key, value)
    # A well-formed version 2 whose content does not validate: it takes number 2, but is not put in force.
    bad = {"relay_domains": ["not a domain"]}
    invalid = new_version(config_with("x.example"), 2, "mallory", "").model_copy(
        update={"content": bad, "sha256": hash_data(bad)})
    await produce(fresh_kafka, topics.MAILGW_CONFIG, invalid.key, invalid.model_dump_json().encode())
    follower = ConfigFollower(settings)
    try:
        await asyncio.wait_for(follower.catch_up(), HANG_GUARD_S)
        assert follower.version == 1 and follower.config.relay_domains == ["good.example"]
        assert follower.versions.sequence == 2
        assert len(follower.versions.ignored) == len(hostile) + 1
        assert "relay_domains[0]: not a valid domain name" in follower.versions.ignored[-1][2]
    finally:
        await follower.stop()
    # The next good version follows the invalid one and comes into force.
    accepted = await store.publish(config_with("next.example"), 2, "alice", "")
    assert accepted.record.version == 3
    versions = await store.read()
    assert versions.version == 3 and [a.config is not None for a in versions.history] == [True, False, True]


async def test_a_follower_applies_a_change_live(fresh_kafka: str) -> None:
    settings = settings_for(fresh_kafka)
    store = ConfigStore(settings)
    await store.publish(config_with("before.example"), 0, "alice", "")
    follower = ConfigFollower(settings)
    seen: list[tuple[float, GatewayConfig]] = []
    changed = asyncio.Event()

    async def on_change(config: GatewayConfig) -> None:
        seen.append((time.monotonic(), config))
        changed.set()

    async def failing(_config: GatewayConfig) -> None:
        raise RuntimeError("a broken callback must not stop the others")

    follower.on_change(failing)
    follower.on_change(on_change)
    await asyncio.wait_for(follower.catch_up(), HANG_GUARD_S)
    assert follower.config.relay_domains == ["before.example"]
    task = asyncio.create_task(follower.follow())
    try:
        await asyncio.sleep(0.2)  # the follower is waiting in its fetch
        published_at = time.monotonic()
        await store.publish(config_with("after.example"), 1, "alice", "")
        await asyncio.wait_for(changed.wait(), HANG_GUARD_S)
        assert seen[0][1].relay_domains == ["after.example"] and follower.version == 2
        # store.publish returns after reading the log back, so this over-estimates the propagation time.
        print(f"config change seen by the follower {seen[0][0] - published_at:.3f} s after publish started")
    finally:
        task.cancel()
        await follower.stop()


async def test_history_survives_compaction_and_prune_keeps_the_current_state(fresh_kafka: str) -> None:
    """Tansu keeps every record (it does not compact), so compaction is applied here to what the topic holds,
    by Kafka's rule: the last record of each key stays, a key whose last record is a tombstone goes."""
    settings = settings_for(fresh_kafka)
    store = ConfigStore(settings)
    for version in range(1, 5):
        await store.publish(config_with(f"v{version}.example"), version - 1, "alice", "")
        if version == 2:
            racer = new_version(config_with("racer.example"), 2, "bob", "")  # lost the race for version 2
            await produce(fresh_kafka, topics.MAILGW_CONFIG, racer.key, racer.model_dump_json().encode())

    def fold(records: list[ConsumerRecord[bytes, bytes]]) -> VersionLog:
        versions = VersionLog(keep_history=True)
        for record in records:
            versions.add(record.offset, record.key, record.value)
        return versions

    def compact(records: list[ConsumerRecord[bytes, bytes]]) -> list[ConsumerRecord[bytes, bytes]]:
        last = {record.key: record for record in records}
        return sorted((r for r in last.values() if r.value is not None), key=lambda r: r.offset)

    before = await collect(fresh_kafka, topics.MAILGW_CONFIG, 5, timeout=HANG_GUARD_S)
    compacted = fold(compact(before))
    assert [a.record.version for a in compacted.history] == [1, 2, 3, 4] and compacted.version == 4

    pruned = await store.prune(keep=2)
    assert [a.record.version for a in pruned] == [1, 2]
    records = await collect(fresh_kafka, topics.MAILGW_CONFIG, 5 + 3, timeout=HANG_GUARD_S)
    # Before compaction: the tombstones are ignored, nothing changes.
    uncompacted = fold(records)
    assert uncompacted.version == 4 and uncompacted.current_config == config_with("v4.example")
    # After compaction: the log starts at version 3 (the racer's record went too), same state everywhere.
    after = fold(compact(records))
    assert [a.record.version for a in after.history] == [3, 4] and after.ignored == []
    assert after.current_config == config_with("v4.example")
    # Tansu never compacts: a second prune finds the tombstones and has nothing left to do.
    assert await store.prune(keep=2) == []
    assert (await store.read()).version == 4


async def test_a_follower_survives_a_broker_that_lost_its_topic(tmp_path: Path) -> None:
    """Tansu with memory storage forgets everything on restart; the follower follows the new log."""
    port = free_port()
    broker = start_tansu(tmp_path / "first", port)
    settings = settings_for(f"127.0.0.1:{port}")
    store = ConfigStore(settings)
    follower = ConfigFollower(settings)
    changed = asyncio.Event()
    seen: list[GatewayConfig] = []

    async def on_change(config: GatewayConfig) -> None:
        seen.append(config)
        changed.set()

    follower.on_change(on_change)
    task: asyncio.Task[None] | None = None
    try:
        await store.publish(config_with("one.example"), 0, "alice", "")
        await store.publish(config_with("two.example"), 1, "alice", "")
        await asyncio.wait_for(follower.catch_up(), HANG_GUARD_S)
        task = asyncio.create_task(follower.follow())
        broker.stop()
        broker = start_tansu(tmp_path / "second", port)
        await asyncio.sleep(0.5)
        assert follower.config.relay_domains == ["two.example"]  # in force until the new log brings a version
        await asyncio.wait_for(store.publish(config_with("new-log.example"), 0, "alice", ""), HANG_GUARD_S)
        await asyncio.wait_for(changed.wait(), HANG_GUARD_S)
        assert seen[-1].relay_domains == ["new-log.example"] and follower.version == 1
    finally:
        if task is not None:
            task.cancel()
        await follower.stop()
        broker.stop()
