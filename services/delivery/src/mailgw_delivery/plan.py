"""What to do with one action, recipient by recipient (pure functions, no I/O).

Accepted recipients that get the same modifications (added and removed header fields, subject tag, removed
attachments, disclaimers) share one copy of the message; each distinct set of modifications is its own copy
(and its own SMTP transaction per destination). Quarantined recipients are grouped by (kind, rule): one
quarantine record each. A decision with `tempfail` (the rules could not judge the message) is deferred like
a 4xx from the relay, whatever its fate.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from mailgw_libs import mime, modify
from mailgw_libs.events import AttachmentRemoval, Disclaimer, Fate, MailAction, RecipientDecision

log = logging.getLogger("mailgw.delivery")

DEFAULT_QUARANTINE_KIND = "spam"

# (headers to add, subject tag, header names to remove (lower case, sorted), attachment removal and
# disclaimers as JSON: the group key)
Modifications = tuple[tuple[tuple[str, str], ...], str, tuple[str, ...], str, str]


@dataclass(frozen=True)
class DeliveryGroup:
    """Recipients receiving the same modified copy of the message."""

    add_headers: tuple[tuple[str, str], ...]
    subject_tag: str
    recipients: tuple[str, ...]
    remove_headers: tuple[str, ...] = ()
    remove_attachments: AttachmentRemoval | None = None
    disclaimers: tuple[Disclaimer, ...] = ()

    @property
    def changes_body(self) -> bool:
        return self.remove_attachments is not None or bool(self.disclaimers)

    def render(self, raw: bytes) -> bytes:
        """The message as these recipients get it: body modifications (if any), then the header changes on
        the raw bytes. Without a body modification the body stays byte-identical."""
        add = list(self.add_headers)
        if self.changes_body:
            changed = modify.apply_body_changes(raw, self.remove_attachments, self.disclaimers)
            raw = changed.raw
            if changed.removed:
                log.info("attachments removed", extra={"removed": list(changed.removed)[:50],
                                                       "count": len(changed.removed)})
            if changed.skipped:
                add.append((modify.DISCLAIMER_SKIPPED_HEADER, f"skipped ({changed.skipped})"))
        if not add and not self.subject_tag and not self.remove_headers:
            return raw
        return mime.apply_header_changes(raw, add, self.subject_tag, self.remove_headers)


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
    # Recipients the rules could not judge: deferred and retried like a temporary failure.
    tempfailed: list[RecipientDecision] = field(default_factory=list)

    @property
    def delivery_recipients(self) -> list[str]:
        return [r for g in self.deliveries for r in g.recipients]


def modifications(decision: RecipientDecision) -> Modifications:
    removed = tuple(sorted({name.strip().lower() for name in decision.remove_headers if name.strip()}))
    removal = decision.remove_attachments.model_dump_json() if decision.remove_attachments else ""
    disclaimers = "[" + ",".join(d.model_dump_json() for d in decision.disclaimers) + "]"
    return tuple((h.name, h.value) for h in decision.add_headers), decision.subject_tag, removed, removal, disclaimers


def plan_action(action: MailAction, only: Collection[str] | None = None) -> Plan:
    """Group the action's decisions; `only` restricts it to some recipients (a retry).

    A recipient listed twice keeps its first decision. Groups keep the order of first
    appearance, so the plan is deterministic.
    """
    seen: set[str] = set()
    deliveries: dict[Modifications, list[str]] = {}
    by_key: dict[Modifications, RecipientDecision] = {}
    tempfailed: list[RecipientDecision] = []
    quarantines: dict[tuple[str, str], list[str]] = {}
    blocked: list[RecipientDecision] = []
    for decision in action.decisions:
        recipient = decision.recipient
        if recipient in seen or (only is not None and recipient not in only):
            continue
        seen.add(recipient)
        if decision.tempfail:
            tempfailed.append(decision)
        elif decision.fate == Fate.ACCEPT:
            key = modifications(decision)
            by_key.setdefault(key, decision)
            deliveries.setdefault(key, []).append(recipient)
        elif decision.fate == Fate.QUARANTINE:
            kind = decision.quarantine_kind or DEFAULT_QUARANTINE_KIND
            quarantines.setdefault((kind, decision.rule), []).append(recipient)
        else:
            blocked.append(decision)
    return Plan(
        deliveries=[DeliveryGroup(key[0], key[1], tuple(rcpts), key[2], by_key[key].remove_attachments,
                                  tuple(by_key[key].disclaimers))
                    for key, rcpts in deliveries.items()],
        quarantines=[QuarantineGroup(kind, rule, tuple(rcpts)) for (kind, rule), rcpts in quarantines.items()],
        blocked=blocked,
        tempfailed=tempfailed,
    )
