"""Builders for rule-engine tests: envelopes, verdicts, small configurations, fakes of the directory/lists."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.events import Direction, MailReceived, SymbolHit, Verdict
from mailgw_rules.engine import UserListKind

SCORERS = ["antispam", "antivirus", "ocr"]
RAW = b"Subject: hello\r\nFrom: s@example.org\r\nX-Mailer: Bulk 9000\r\n\r\nbody\r\n"


def envelope(rcpts: list[str] | None = None, sender: str = "s@example.org", direction: Direction = Direction.INBOUND,
             client_ip: str = "192.0.2.1", size: int = 100, subject: str = "hello") -> MailReceived:
    return MailReceived(message_id="M1", received_at=datetime(2026, 1, 1, tzinfo=UTC), client_ip=client_ip,
                        mail_from=sender, rcpt_tos=rcpts or ["a@example.com"], direction=direction, size=size,
                        subject=subject)


def verdict(scorer: str, *hits: tuple[str, float], viruses: list[str] | None = None, failed: bool = False,
            **extra: Any) -> Verdict:
    v = Verdict.of("M1", scorer, [SymbolHit(name=n, score=s) for n, s in hits], 1.0, viruses, failed)
    return v.model_copy(update=extra) if extra else v


def verdicts(*spam_hits: tuple[str, float], viruses: list[str] | None = None, **av_extra: Any) -> dict[str, Verdict]:
    return {"antispam": verdict("antispam", *spam_hits), "antivirus": verdict("antivirus", viruses=viruses, **av_extra),
            "ocr": verdict("ocr")}


def config(text: str) -> RuleSystemConfig:
    return RuleSystemConfig.model_validate(yaml.safe_load(text))


class FakeDirectory:
    def __init__(self, users: set[str], groups: dict[str, set[str]]) -> None:
        self.users = users
        self.groups = groups
        self.calls = 0
        self.down = False

    async def is_member(self, address: str, group: str, profile: str) -> bool:
        self.calls += 1
        if self.down:
            raise ConnectionError("ldap down, nothing cached")
        return profile == "corp" and address in self.groups.get(group, set())

    async def user_exists(self, address: str, profile: str) -> bool:
        self.calls += 1
        return profile == "corp" and address in self.users


class FakeUserLists:
    def __init__(self, entries: dict[tuple[str, str], UserListKind]) -> None:
        self.entries = entries  # (recipient, sender) -> kind

    async def match_many(self, recipients: list[str], sender: str) -> Sequence[UserListKind | None]:
        return [self.entries.get((r, sender)) for r in recipients]
