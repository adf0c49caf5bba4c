"""What to do with one action, recipient by recipient (pure functions, no I/O).

Accepted recipients that get the same header changes (added and removed fields, subject tag) share one SMTP
transaction; each distinct set of changes is its own transaction with its own copy of the
message. Quarantined recipients are grouped by (kind, rule): one quarantine record each.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from mailgw_libs import mime
from mailgw_libs.events import Fate, MailAction, RecipientDecision

DEFAULT_QUARANTINE_KIND = "spam"

# (headers to add, subject tag, header names to remove (lower case, sorted))
Modifications = tuple[tuple[tuple[str, str], ...], str, tuple[str, ...]]


@dataclass(frozen=True)
class DeliveryGroup:
    """Recipients receiving the same modified copy of the message."""

    add_headers: tuple[tuple[str, str], ...]
    subject_tag: str
    recipients: tuple[str, ...]
    remove_headers: tuple[str, ...] = ()

    def render(self, raw: bytes) -> bytes:
        """The message as these recipients get it: header block changed, body byte-identical."""
        if not self.add_headers and not self.subject_tag and not self.remove_headers:
            return raw
        return mime.apply_header_changes(raw, list(self.add_headers), self.subject_tag, self.remove_headers)


@dataclass(frozen=True)
class QuarantineGroup:
    kind: str
    rule: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    deliveries: list[DeliveryGroup] = field(default_factory=list)
    quarantines: list[QuarantineGroup] = field(default_factory=list)
    blocked: list[RecipientDecision] = field(default_factory=list)

    @property
    def delivery_recipients(self) -> list[str]:
        return [r for g in self.deliveries for r in g.recipients]


def modifications(decision: RecipientDecision) -> Modifications:
    removed = tuple(sorted({name.strip().lower() for name in decision.remove_headers if name.strip()}))
    return tuple((h.name, h.value) for h in decision.add_headers), decision.subject_tag, removed


def plan_action(action: MailAction, only: Collection[str] | None = None) -> Plan:
    """Group the action's decisions; `only` restricts it to some recipients (a retry).

    A recipient listed twice keeps its first decision. Groups keep the order of first
    appearance, so the plan is deterministic.
    """
    seen: set[str] = set()
    deliveries: dict[Modifications, list[str]] = {}
    quarantines: dict[tuple[str, str], list[str]] = {}
    blocked: list[RecipientDecision] = []
    for decision in action.decisions:
        recipient = decision.recipient
        if recipient in seen or (only is not None and recipient not in only):
            continue
        seen.add(recipient)
        if decision.fate == Fate.ACCEPT:
            deliveries.setdefault(modifications(decision), []).append(recipient)
        elif decision.fate == Fate.QUARANTINE:
            kind = decision.quarantine_kind or DEFAULT_QUARANTINE_KIND
            quarantines.setdefault((kind, decision.rule), []).append(recipient)
        else:
            blocked.append(decision)
    return Plan(
        deliveries=[DeliveryGroup(headers, tag, tuple(rcpts), removed)
                    for (headers, tag, removed), rcpts in deliveries.items()],
        quarantines=[QuarantineGroup(kind, rule, tuple(rcpts)) for (kind, rule), rcpts in quarantines.items()],
        blocked=blocked,
    )
