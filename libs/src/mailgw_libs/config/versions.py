"""Configuration versions as records of `mailgw.config`, and the one rule that decides which version is current.

Layout: one record per version, key `version/<number>/<writer id>`, value = a `ConfigVersion` (JSON).
Every key is distinct, so log compaction never removes a version: the topic keeps the whole history.

The topic has one partition, so every reader sees the records in the same order, and folds them with the
same rule (`VersionLog.add`): a record is the next version of the sequence when it parses as a version,
its key matches, its hash matches its content, and its number is exactly the previous number + 1.
Anything else is logged and ignored. That rule *is* the optimistic concurrency: two writers that both
start from version 5 both publish a version 6; the first in the log wins everywhere, the second is
ignored everywhere, and its writer sees that on reading back. No "current" pointer record is needed:
the pointer is the fold, and it cannot disagree with the versions it points to.

A version in the sequence comes into force when its content validates. One that does not (written by
hand, or by a newer model than this reader's) keeps its number but is not used: the previous
configuration stays in force, and a later valid version still follows it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .document import ConfigError, describe, hash_data, to_data, validate
from .model import GatewayConfig

log = logging.getLogger("mailgw.config")

KEY_PREFIX = "version/"


class ConfigVersion(BaseModel):
    """One version as stored on the topic: metadata and the whole document."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = 1
    kind: Literal["mailgw.config.version"] = "mailgw.config.version"
    version: int = Field(ge=1)
    writer_id: str = Field(min_length=1, max_length=64)
    author: str = Field(default="", max_length=256)
    created_at: datetime
    comment: str = Field(default="", max_length=4096)
    # A rollback records the version whose content it republished.
    rollback_of: int | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content: dict[str, Any]

    @property
    def key(self) -> str:
        return version_key(self.version, self.writer_id)

    def summary(self) -> dict[str, object]:
        return {"version": self.version, "author": self.author, "created_at": self.created_at.isoformat(),
                "comment": self.comment, "sha256": self.sha256, "rollback_of": self.rollback_of}


def version_key(version: int, writer_id: str) -> str:
    return f"{KEY_PREFIX}{version:010d}/{writer_id}"


def new_version(config: GatewayConfig, version: int, author: str, comment: str,
                rollback_of: int | None = None) -> ConfigVersion:
    data = to_data(config)
    return ConfigVersion(version=version, writer_id=uuid.uuid4().hex, author=author, created_at=datetime.now(UTC),
                         comment=comment, rollback_of=rollback_of, sha256=hash_data(data), content=data)


@dataclass(frozen=True)
class Accepted:
    """A version in the sequence; `config` is None when its content does not validate for this reader."""

    record: ConfigVersion
    config: GatewayConfig | None
    offset: int
    error: str = ""


@dataclass
class VersionLog:
    """The fold over `mailgw.config`: the sequence of versions, and the configuration in force."""

    keep_history: bool = False
    # The newest version of the sequence (the next one published must be its number + 1).
    head: Accepted | None = None
    # The newest version whose content is valid: the configuration in force.
    current: Accepted | None = None
    current_config: GatewayConfig | None = None
    history: list[Accepted] = field(default_factory=list)
    # (offset, key, reason) of the last records that were ignored or not valid.
    ignored: list[tuple[int, str, str]] = field(default_factory=list)
    # With keep_history: (offset, raw key) of every record read (what `prune` needs to write tombstones).
    keys: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def sequence(self) -> int:
        return self.head.record.version if self.head else 0

    @property
    def version(self) -> int:
        """Number of the version in force (0: the shipped defaults)."""
        return self.current.record.version if self.current else 0

    def add(self, offset: int, key: bytes | None, value: bytes | None) -> Accepted | None:
        """Fold one record; the version that came into force, or None (the reason is logged)."""
        key_text = (key or b"").decode("utf-8", errors="replace")[:200]
        if self.keep_history:
            self.keys.append((offset, key or b""))
        try:
            record = self._sequence(key_text, value)
        except ConfigError as exc:
            self._ignore(offset, key_text, "configuration record ignored", str(exc))
            return None
        try:
            config: GatewayConfig | None = validate(record.content)
            error = ""
        except ConfigError as exc:
            # The version keeps its place in the sequence (every reader agrees on the numbering), but its
            # content is not used: the previous configuration stays in force.
            config, error = None, str(exc)
        entry = Accepted(record, config, offset, error)
        self.head = entry
        if self.keep_history:
            self.history.append(entry)
        if config is None:
            self._ignore(offset, key_text, "configuration version not valid, previous one stays in force", error)
            return None
        self.current, self.current_config = entry, config
        return entry

    def _ignore(self, offset: int, key: str, message: str, reason: str) -> None:
        self.ignored.append((offset, key, reason[:2000]))
        del self.ignored[:-100]
        log.error(message, extra={"offset": offset, "key": key, "reason": reason[:2000]})

    def _sequence(self, key: str, value: bytes | None) -> ConfigVersion:
        """The record as the next version of the sequence, or ConfigError. Checks only what every reader
        checks the same way, whatever its version of the model: envelope, key, number, hash."""
        if not key.startswith(KEY_PREFIX):
            raise ConfigError(f"unknown record key {key!r}")
        if value is None:
            # Tombstones prune old versions (`mailgw config prune`); once compacted they are gone.
            raise ConfigError("tombstone (an old version pruned)")
        try:
            record = ConfigVersion.model_validate_json(value)
        except ValidationError as exc:
            raise ConfigError(f"not a configuration version: {describe(exc, limit=5)}") from None
        if record.key != key:
            raise ConfigError(f"key {key!r} does not match version {record.version} of writer {record.writer_id}")
        # The first version read may be any number: older ones may have been pruned and compacted away.
        if self.head is not None and record.version != self.sequence + 1:
            raise ConfigError(f"version {record.version} does not follow version {self.sequence} "
                              "(a concurrent change was published first)")
        if hash_data(record.content) != record.sha256:
            raise ConfigError(f"content hash mismatch in version {record.version}")
        return record

    def prunable(self, keep: int) -> tuple[list[Accepted], list[bytes]]:
        """Versions older than the newest `keep` (and than the one in force), and the keys to tombstone for
        them: every record before the oldest kept version, so that after compaction the log starts with it."""
        if keep < 1:
            raise ValueError("keep at least one version")
        kept = self.history[-keep:]
        if not kept:
            return [], []
        cut = kept[0].offset if self.current is None else min(kept[0].offset, self.current.offset)
        later = {key for offset, key in self.keys if offset >= cut}
        old = sorted({key for offset, key in self.keys if offset < cut and key and key not in later})
        # A key already tombstoned (pruned before, not compacted yet) is not pruned again.
        keys = set(old)
        return [a for a in self.history if a.offset < cut and a.record.key.encode() in keys], old

    def find(self, version: int) -> Accepted | None:
        for accepted in self.history:
            if accepted.record.version == version:
                return accepted
        return None
