"""The rule engine: evaluates the rule system for every recipient of a message, PMG-style.

Rules run by priority (higher first; equal priorities in configuration order). A rule matches a
recipient when its direction fits and each non-empty category matches (from: the envelope sender or
client IP; to: the recipient; when: the clock; what: the message, with the recipient's effective spam
score). Non-final actions accumulate; the first final action (accept, block, quarantine) decides
the recipient and ends its evaluation. A recipient no final action decides is accepted ("default").

Per-user lists (`UserListStore`): a welcomelisted sender discards the spam result for that recipient
(spam-level objects do not match); a blocklisted sender adds BLOCKLIST_SCORE to its score.

Scorer failure policy: a scorer that is missing at the deadline or failed counts per
`failure_policy` (ignore | quarantine | tempfail). Unless a rule blocked the recipient, an unscanned
message goes to quarantine (kind "unscanned"); with tempfail the decision also carries
`tempfail=True` (retry the scan later, like rspamd's soft reject), so it is never delivered blind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, Protocol

from mailgw_libs.config.model import Notifications, NotificationTemplate
from mailgw_libs.config.rulesystem import (
    FINAL_ACTIONS,
    ActionObject,
    DisclaimerAction,
    HeaderAction,
    RemoveAttachmentsAction,
    RuleSystemConfig,
)
from mailgw_libs.events import (
    AttachmentRemoval,
    Bcc,
    Direction,
    Disclaimer,
    Fate,
    HeaderChange,
    MailAction,
    MailReceived,
    Notification,
    RecipientDecision,
    RuleMatch,
    Verdict,
    utcnow,
)

from .facts import MessageFacts, gather
from .macros import MacroContext, expand, per_recipient
from .matching import CompiledWhat, CompiledWhen, CompiledWho, Directory, WhatResult

# Headers a sender could forge to look already scanned: always removed before delivery.
SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Score", "X-Spam-Symbols", "X-Spam-Status", "X-Spam-Level")
BLOCKLIST_SCORE = 100.0
# From this effective score a recipient's copy counts as spam in statistics (PMG counts spam from level 3).
SPAM_STATISTICS_LEVEL = 3.0
DEFAULT_RULE = "default"
YIELD_EVERY = 500  # recipients evaluated between two yields to the event loop
# The one administrator address is the configuration's `notifications.admin_address`; its default here too.
DEFAULT_ADMIN_ADDRESS: str = Notifications.model_fields["admin_address"].default
FailurePolicy = Literal["ignore", "quarantine", "tempfail"]
UserListKind = Literal["welcome", "block"]
Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


class UserLists(Protocol):
    async def match_many(self, recipients: list[str], sender: str) -> Sequence[UserListKind | None]: ...


@dataclass(frozen=True)
class CompiledRule:
    name: str
    priority: int
    direction: str
    from_: list[CompiledWho]
    to: list[CompiledWho]
    what: list[CompiledWhat]
    when: list[CompiledWhen]
    actions: list[tuple[str, ActionObject]]  # (group name, action)

    @property
    def final(self) -> ActionObject | None:
        return next((a for _, a in self.actions if a.type in FINAL_ACTIONS), None)

    def applies_to(self, direction: Direction) -> bool:
        return self.direction == "both" or self.direction == direction.value


@dataclass
class RecipientState:
    recipient: str
    score: float | None  # None: welcomelisted, the spam result is discarded
    fate: Fate | None = None
    rule: str = DEFAULT_RULE
    quarantine_kind: str = ""
    headers: dict[str, HeaderChange] = field(default_factory=dict)  # lower-cased name -> change (modify)
    added: list[HeaderChange] = field(default_factory=list)  # "add" mode keeps every one
    remove_headers: list[str] = field(default_factory=lambda: list(SPAM_HEADERS))
    subject_tag: str = ""
    removal: AttachmentRemoval | None = None
    disclaimers: list[Disclaimer] = field(default_factory=list)
    matched: list[RuleMatch] = field(default_factory=list)


@dataclass
class _Fanout:
    """A notification or BCC of one rule, collected over the recipients it matched."""

    rule: str
    action: ActionObject
    recipients: list[str] = field(default_factory=list)
    score: float = 0.0
    filenames: list[str] = field(default_factory=list)


def _header_change(action: HeaderAction, ctx: MacroContext) -> HeaderChange:
    return HeaderChange(name=action.field, value=expand(action.value, ctx, one_line=True)[:900])


def _disclaimer(action: DisclaimerAction, ctx: MacroContext) -> Disclaimer:
    return Disclaimer(text=expand(action.text, ctx), html=expand(action.html, ctx), position=action.position)


def compile_rules(config: RuleSystemConfig) -> list[CompiledRule]:
    who = {name: CompiledWho(name, g) for name, g in config.who.items()}
    what = {name: CompiledWhat(name, g) for name, g in config.what.items()}
    when = {name: CompiledWhen(name, g) for name, g in config.when.items()}
    ordered = sorted((r for r in config.rules if r.active), key=lambda r: -r.priority)  # stable: config order
    return [CompiledRule(
        name=r.name, priority=r.priority, direction=r.direction,
        from_=[who[n] for n in r.from_], to=[who[n] for n in r.to], what=[what[n] for n in r.what],
        when=[when[n] for n in r.when],
        actions=[(g, a) for g in r.actions for a in config.actions[g].objects],
    ) for r in ordered]


class RuleEngine:
    def __init__(self, config: RuleSystemConfig, directory: Directory | None = None,
                 userlists: UserLists | None = None, clock: Clock = utc_clock,
                 admin_address: str = DEFAULT_ADMIN_ADDRESS,
                 templates: Mapping[str, NotificationTemplate] | None = None) -> None:
        self.config = config
        self.admin_address = admin_address
        self.templates = dict(templates or {})
        missing = sorted(config.notification_templates_used() - set(self.templates))
        if missing:
            # The whole configuration refuses this already; a fixed rule-set file has no templates to name.
            raise ValueError(f"notify actions name unknown notification template(s) {missing}")
        self.rules = compile_rules(config)
        self.directory = directory
        self.userlists = userlists
        self.clock = clock
        self.need_parts = any(w.marks_parts for r in self.rules for w in r.what)

    async def decide(self, envelope: MailReceived, raw: bytes, verdicts: dict[str, Verdict], expected: list[str],
                     failure_policy: dict[str, FailurePolicy]) -> MailAction:
        # MIME parsing is CPU work: off the event loop.
        facts = await asyncio.to_thread(gather, envelope, raw, list(verdicts.values()), self.need_parts)
        missing = [s for s in expected if s not in verdicts]
        failed = sorted(s for s, v in verdicts.items() if v.failed)
        states = await self._initial_states(envelope, facts)
        fanouts: dict[tuple[str, int], _Fanout] = {}
        await self._evaluate(facts, states, fanouts)
        unscanned = {s: failure_policy.get(s, "ignore") for s in missing + failed}
        unscanned = {s: p for s, p in unscanned.items() if p != "ignore"}
        decisions = [self._decision(st, facts, unscanned) for st in states]
        notifications, bccs = self._fanout(facts, fanouts)
        return MailAction(
            message_id=envelope.message_id, decided_at=utcnow(), received_at=envelope.received_at,
            mail_from=envelope.mail_from, direction=envelope.direction, client_ip=envelope.client_ip,
            subject=envelope.subject, score=facts.score, symbols=facts.symbols, viruses=facts.viruses,
            missing_scorers=missing, failed_scorers=failed, decisions=decisions,
            notifications=notifications, bcc=bccs,
        )

    async def _initial_states(self, envelope: MailReceived, facts: MessageFacts) -> list[RecipientState]:
        kinds: Sequence[UserListKind | None] = [None] * len(envelope.rcpt_tos)
        if self.userlists is not None and envelope.direction is Direction.INBOUND:
            kinds = await self.userlists.match_many(list(envelope.rcpt_tos), envelope.mail_from)
        states = []
        for rcpt, kind in zip(envelope.rcpt_tos, kinds, strict=True):
            score: float | None = facts.score
            if kind == "welcome":
                score = None
            elif kind == "block":
                score = facts.score + BLOCKLIST_SCORE
            states.append(RecipientState(recipient=rcpt, score=score))
        return states

    async def _evaluate(self, facts: MessageFacts, states: list[RecipientState],
                        fanouts: dict[tuple[str, int], _Fanout]) -> None:
        envelope = facts.envelope
        now = self.clock()
        to_cache: dict[tuple[str, str], bool] = {}
        memo: dict[tuple[object, ...], Any] = {}
        for rule in self.rules:
            open_states = [s for s in states if s.fate is None]
            if not open_states:
                return
            if not rule.applies_to(envelope.direction):
                continue
            if rule.when and not any(w.match(now) for w in rule.when):
                continue
            from_hits = [g.name for g in rule.from_
                         if await g.matches(envelope.mail_from, envelope.client_ip, self.directory)]
            if rule.from_ and not from_hits:
                continue
            what_cache: dict[float | None, tuple[list[str], frozenset[int]] | None] = {}
            for position, state in enumerate(open_states, 1):
                if position % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # thousands of recipients: let other messages' I/O proceed meanwhile
                if state.score not in what_cache:
                    what_cache[state.score] = self._what(rule, facts, state.score)
                what = what_cache[state.score]
                if what is None:
                    continue
                to_hits: list[str] = []
                for group in rule.to:
                    key = (group.name, state.recipient)
                    if key not in to_cache:
                        to_cache[key] = await group.matches(state.recipient, "", self.directory)  # IP objects: from only
                    if to_cache[key]:
                        to_hits.append(group.name)
                if rule.to and not to_hits:
                    continue
                objects = ([f"from:{n}" for n in from_hits] + [f"to:{n}" for n in to_hits] + what[0]
                           + [f"when:{w.name}" for w in rule.when])
                self._apply(rule, state, facts, objects, what[1], fanouts, memo)

    @staticmethod
    def _what(rule: CompiledRule, facts: MessageFacts, score: float | None) -> tuple[list[str], frozenset[int]] | None:
        """Tracking names and marked parts of the rule's what groups that match; None if none does."""
        if not rule.what:
            return [], frozenset()
        results: list[tuple[str, WhatResult]] = [(g.name, g.match(facts, score)) for g in rule.what]
        hits = [(name, r) for name, r in results if r.matched]
        if not hits:
            return None
        names = [f"what:{name}" for name, _ in hits]
        return names, frozenset().union(*(r.parts for _, r in hits))

    def _context(self, facts: MessageFacts, rule: str, recipient: str, recipients: list[str], score: float,
                 filenames: list[str]) -> MacroContext:
        env = facts.envelope
        return MacroContext(sender=env.mail_from, recipients=recipients, recipient=recipient,
                            admin=self.admin_address, subject=env.subject, message_id=env.message_id,
                            rule=rule, score=score, symbols=facts.symbols, viruses=facts.viruses,
                            filenames=filenames, client_ip=env.client_ip)

    def _apply(self, rule: CompiledRule, state: RecipientState, facts: MessageFacts, objects: list[str],
               marked: frozenset[int], fanouts: dict[tuple[str, int], _Fanout], memo: dict[tuple[object, ...], Any]) -> None:
        """Run the rule's actions for one recipient. `memo` shares what does not differ between the recipients
        of one message (expanded texts, header and disclaimer objects), so 10,000 recipients stay cheap."""
        score = state.score if state.score is not None else 0.0
        names = {p.index: p.filename for p in facts.parts}
        filenames = [names[i] for i in sorted(marked) if names.get(i)]
        ctx = self._context(facts, rule.name, state.recipient, [state.recipient], score, filenames)

        def shared(index: int, build: Callable[[], Any], *templates: str) -> Any:
            recipient = state.recipient if any(per_recipient(t) for t in templates) else None
            key = (rule.name, index, score, marked, recipient)
            if key not in memo:
                memo[key] = build()
            return memo[key]

        done: list[str] = []
        for index, (group, action) in enumerate(rule.actions):
            done.append(group)
            match action.type:
                case "accept" | "block" | "quarantine":
                    state.fate = Fate(action.type)
                    state.rule = rule.name
                    if action.type == "quarantine":
                        state.quarantine_kind = action.kind or ("virus" if facts.viruses else "spam")
                case "header":
                    change = shared(index, partial(_header_change, action, ctx), action.value)
                    if action.mode == "modify":
                        state.headers[action.field.lower()] = change
                        if action.field.lower() not in {h.lower() for h in state.remove_headers}:
                            state.remove_headers.append(action.field)
                    else:
                        state.added.append(change)
                case "subject_tag":
                    state.subject_tag = state.subject_tag or " ".join(action.tag.split())
                case "remove_attachments":
                    self._remove(state, action, marked, facts, ctx)
                case "disclaimer":
                    disclaimer = shared(index, partial(_disclaimer, action, ctx), action.text, action.html)
                    if disclaimer not in state.disclaimers:
                        state.disclaimers.append(disclaimer)
                case "notify" | "bcc":
                    fan = fanouts.setdefault((rule.name, index), _Fanout(rule.name, action, score=score))
                    fan.recipients.append(state.recipient)
                    fan.filenames = filenames
        actions = list(dict.fromkeys(done))
        key = ("match", rule.name, tuple(objects))
        if key not in memo:
            memo[key] = RuleMatch(rule=rule.name, priority=rule.priority, objects=objects, actions=actions)
        state.matched.append(memo[key])

    @staticmethod
    def _remove(state: RecipientState, action: RemoveAttachmentsAction, marked: frozenset[int],
                facts: MessageFacts, ctx: MacroContext) -> None:
        if not action.all and not marked:
            return  # nothing this rule marked: nothing to strip
        previous = state.removal
        everything = action.all or (previous is not None and previous.all_attachments)
        indexes = sorted(set(previous.part_indexes if previous else []) | (set() if action.all else set(marked)))
        filenames = [p.filename for p in facts.parts if p.filename and (action.all or p.index in marked)]
        text = expand(action.text, MacroContext(**{**ctx.__dict__, "filenames": filenames}))
        state.removal = AttachmentRemoval(
            part_indexes=[] if everything else indexes, all_attachments=everything,
            replacement_text=text, keep_original=action.quarantine or (previous.keep_original if previous else False))

    @staticmethod
    def _decision(state: RecipientState, facts: MessageFacts, unscanned: dict[str, FailurePolicy]) -> RecipientDecision:
        fate = state.fate or Fate.ACCEPT
        rule, kind, tempfail = state.rule, state.quarantine_kind, False
        if unscanned and fate is not Fate.BLOCK:
            # Never deliver (or call clean) mail a required scorer did not judge.
            fate, kind = Fate.QUARANTINE, "unscanned"
            tempfail = "tempfail" in unscanned.values()
            rule = ("tempfail-unscanned:" if tempfail else "quarantine-unscanned:") + ",".join(sorted(unscanned))
        headers = list(state.added) + list(state.headers.values())
        if fate is Fate.ACCEPT:
            # Scorers' own headers (Authentication-Results ...) go on delivered mail.
            headers = list(facts.scorer_headers) + headers
        spam = state.score is not None and state.score >= SPAM_STATISTICS_LEVEL
        return RecipientDecision(
            recipient=state.recipient, fate=fate, rule=rule, spam=spam, quarantine_kind=kind,
            add_headers=headers, subject_tag=state.subject_tag, remove_headers=state.remove_headers,
            remove_attachments=state.removal, disclaimers=state.disclaimers, matched=state.matched,
            tempfail=tempfail,
        )

    def _fanout(self, facts: MessageFacts, fanouts: dict[tuple[str, int], _Fanout]) -> tuple[list[Notification], list[Bcc]]:
        notifications: list[Notification] = []
        bccs: dict[tuple[str, bool], Bcc] = {}
        env = facts.envelope
        for fan in fanouts.values():
            action = fan.action
            if action.type == "bcc":
                bccs.setdefault((action.to, action.original), Bcc(to=action.to, original=action.original, rule=fan.rule))
                continue
            if action.type != "notify":
                continue
            targets: list[str] = []
            for target in action.to:
                if target == "admin":
                    targets.append(self.admin_address)
                elif target == "sender":
                    if env.mail_from and env.mail_from != "<>":  # never notify the null sender (bounce loops)
                        targets.append(env.mail_from)
                elif target == "recipients":
                    targets.extend(fan.recipients)
                else:
                    targets.append(target)
            targets = list(dict.fromkeys(targets))
            if not targets:
                continue
            ctx = self._context(facts, fan.rule, fan.recipients[0], fan.recipients, fan.score, fan.filenames)
            template = self.templates[action.template] if action.template else None
            subject, body = (template.subject, template.body) if template else (action.subject, action.body)
            notifications.append(Notification(
                to=targets, subject=expand(subject, ctx, one_line=True)[:900], text=expand(body, ctx),
                html=expand(action.html, ctx), attach_original=action.attach_original, rule=fan.rule))
        return notifications, list(bccs.values())
