"""Rule-system part of the configuration: objects (who/what/when/action) and rules, PMG-style.

A rule (name, priority 0-100, higher first; active; direction in/out/both) references object groups
by name in five categories: `from` and `to` (who groups), `what`, `when`, and `actions`. Within a
category the groups are OR'ed, the categories are AND'ed, and an empty category matches everything.
A group combines its objects with `mode` any/all and may `invert` the result ("none must match",
"at least one must not match"); an empty group matches nothing (inverted: everything).

Regular expressions use RE2 syntax (no backreferences or lookaround): matching takes linear time,
so no pattern an administrator or attacker writes can stall the rules service (ReDoS). Patterns are
case-insensitive; `regex` who objects and file-name/content-type patterns must match the whole
value, header patterns are searched in the field's value.

Text of actions may contain macros, replaced per message and recipient: __SENDER__, __RECEIVERS__,
__RECIPIENT__, __ADMIN__, __SUBJECT__, __MSGID__, __RULE__, __SPAMLEVEL__, __SPAMSTARS__,
__SPAM_INFO__, __VIRUS_INFO__, __FILENAME__, __SENDER_IP__ (see services/rules README).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import re2
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, IPvAnyAddress, model_validator

MAX_PATTERN_LENGTH = 2000
# Memory budget of one compiled pattern: a huge pattern fails to compile with a clear error instead of
# eating the service's memory.
PATTERN_MAX_MEM = 8 << 20
MAX_OBJECTS_PER_GROUP = 10_000
MAX_RULES = 1000
MAX_TEXT = 64 * 1024

_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 field name: printable ASCII except ':'
_GROUP_NAME = re.compile(r"^[^\x00-\x1f]{1,128}$")


def compile_pattern(pattern: str) -> re2._Regexp:
    """The compiled, case-insensitive RE2 form of a configured pattern; ValueError if it does not compile."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = PATTERN_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regular expression {pattern!r} (RE2 syntax: no backreferences or lookaround): "
                         f"{detail}") from None


def _pattern(value: str) -> str:
    compile_pattern(value)
    return value


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"not a header field name: {value!r}")
    return value


def _address(value: str) -> str:
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > 320 or any(c.isspace() or c in "<>," for c in value):
        raise ValueError(f"not an e-mail address: {value!r}")
    return f"{local.lower()}@{domain.lower().rstrip('.')}"


def _domain(value: str) -> str:
    name = value.strip().lower().lstrip("@").rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or any(not lb or len(lb) > 63 or not re.fullmatch(r"[a-z0-9_-]+", lb)
                                          for lb in labels):
        raise ValueError(f"not a domain name: {value!r}")
    return name


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"not an IP network (address/prefix, no host bits set): {value!r}: {exc}") from None


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name such as Europe/Vienna)") from None
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Address = Annotated[str, AfterValidator(_address)]
DomainName = Annotated[str, AfterValidator(_domain)]
Network = Annotated[str, AfterValidator(_network)]
TimeZoneName = Annotated[str, AfterValidator(_timezone)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- Who: the envelope sender and client (from) or a recipient (to) -------------------------------

class EmailWho(_Item):
    type: Literal["email"]
    address: Address


class RegexWho(_Item):
    type: Literal["regex"]
    pattern: Pattern  # the whole address must match


class DomainWho(_Item):
    type: Literal["domain"]
    domain: DomainName
    subdomains: bool = False  # also any subdomain of `domain`


class IpWho(_Item):
    """The SMTP client's address (meaningful in `from` groups)."""

    type: Literal["ip"]
    address: IPvAnyAddress


class NetworkWho(_Item):
    type: Literal["network"]
    network: Network


class LdapUserWho(_Item):
    """An address of the directory profile: one account (`address`) or, empty, any existing user."""

    type: Literal["ldap_user"]
    profile: str = Field(min_length=1, max_length=128)
    address: Address | None = None


class LdapGroupWho(_Item):
    type: Literal["ldap_group"]
    profile: str = Field(min_length=1, max_length=128)
    group: str = Field(min_length=1, max_length=1024)


WhoObject = Annotated[EmailWho | RegexWho | DomainWho | IpWho | NetworkWho | LdapUserWho | LdapGroupWho,
                      Field(discriminator="type")]


# --- What: the message and its scan results -------------------------------------------------------

class SpamLevelWhat(_Item):
    type: Literal["spam_level"]
    level: float = Field(ge=0, le=10_000)


class VirusWhat(_Item):
    type: Literal["virus"]


class SymbolWhat(_Item):
    """A scorer symbol (rule) that hit, by exact name (case-insensitive)."""

    type: Literal["symbol"]
    name: str = Field(min_length=1, max_length=256)


class HeaderWhat(_Item):
    type: Literal["header"]
    field: HeaderName
    pattern: Pattern  # searched in the decoded value of every field of that name


class ContentTypeWhat(_Item):
    """A MIME leaf part whose declared or detected type fully matches `pattern` (e.g. `image/.*`)."""

    type: Literal["content_type"]
    pattern: Pattern


class FilenameWhat(_Item):
    type: Literal["filename"]
    pattern: Pattern  # the whole file name, e.g. `.*\.(exe|scr)`


class ArchiveContentTypeWhat(_Item):
    type: Literal["archive_content_type"]
    pattern: Pattern


class ArchiveFilenameWhat(_Item):
    type: Literal["archive_filename"]
    pattern: Pattern


class SizeWhat(_Item):
    type: Literal["size"]
    min_bytes: int | None = Field(default=None, ge=0)
    max_bytes: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_bytes is None and self.max_bytes is None:
            raise ValueError("size object needs min_bytes and/or max_bytes")
        if self.min_bytes is not None and self.max_bytes is not None and self.min_bytes > self.max_bytes:
            raise ValueError("size object: min_bytes is larger than max_bytes")
        return self


WhatObject = Annotated[SpamLevelWhat | VirusWhat | SymbolWhat | HeaderWhat | ContentTypeWhat | FilenameWhat
                       | ArchiveContentTypeWhat | ArchiveFilenameWhat | SizeWhat, Field(discriminator="type")]
# What objects that mark MIME parts (a "remove attachments" action can strip just those).
PART_OBJECT_TYPES = frozenset({"content_type", "filename", "archive_content_type", "archive_filename"})


# --- When -----------------------------------------------------------------------------------------

class TimeFrameWhen(_Item):
    """Weekdays and a local time range [start, end); end before start spans midnight (22:00-06:00)."""

    type: Literal["timeframe"]
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: time = time(0, 0)
    end: time = time(23, 59, 59, 999999)
    timezone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.start == self.end:
            raise ValueError(f"time frame is empty: start {self.start} equals end {self.end}")
        return self


WhenObject = Annotated[TimeFrameWhen, Field(discriminator="type")]


# --- Actions --------------------------------------------------------------------------------------

class AcceptAction(_Item):
    type: Literal["accept"]


class BlockAction(_Item):
    type: Literal["block"]


class QuarantineAction(_Item):
    """Final. The quarantine kind follows the message: virus if infected, else spam (or `kind`)."""

    type: Literal["quarantine"]
    kind: Literal["", "spam", "virus", "attachment", "policy"] = ""


class HeaderAction(_Item):
    """Add a header field; `modify` replaces the message's own fields of that name."""

    type: Literal["header"]
    field: HeaderName
    value: Text
    mode: Literal["add", "modify"] = "modify"


class SubjectTagAction(_Item):
    type: Literal["subject_tag"]
    tag: str = Field(min_length=1, max_length=200)


class RemoveAttachmentsAction(_Item):
    type: Literal["remove_attachments"]
    all: bool = False  # False: only the parts marked by the rule's what objects
    text: Text = "This attachment (__FILENAME__) was removed by the mail gateway's policy (rule __RULE__)."
    quarantine: bool = True  # keep the original in the attachment quarantine


NotifyTarget = Annotated[str, AfterValidator(lambda v: v if v in ("admin", "sender", "recipients") else _address(v))]


class NotifyAction(_Item):
    type: Literal["notify"]
    # "admin" (the gateway's notifications.admin_address), "sender", "recipients" or addresses.
    to: list[NotifyTarget] = Field(min_length=1, max_length=100)
    subject: Text = "Mail gateway notification: __SUBJECT__"
    body: Text = ("Rule __RULE__ matched a message from __SENDER__ to __RECEIVERS__.\n"
                  "Subject: __SUBJECT__\nSpam level: __SPAMLEVEL__\nViruses: __VIRUS_INFO__\n")
    html: Text = ""
    attach_original: bool = False
    # A named template of the configuration's `notifications.templates`: its subject and body replace the two
    # above, so one wording serves many rules (the whole configuration refuses a name that is not defined).
    template: str | None = Field(default=None, min_length=1, max_length=128)


class BccAction(_Item):
    type: Literal["bcc"]
    to: Address
    original: bool = True  # False: the processed message


class DisclaimerAction(_Item):
    type: Literal["disclaimer"]
    text: Text = Field(min_length=1)
    html: Text = ""
    position: Literal["top", "bottom"] = "bottom"


ActionObject = Annotated[AcceptAction | BlockAction | QuarantineAction | HeaderAction | SubjectTagAction
                         | RemoveAttachmentsAction | NotifyAction | BccAction | DisclaimerAction,
                         Field(discriminator="type")]
FINAL_ACTIONS = frozenset({"accept", "block", "quarantine"})


# --- Groups and rules -----------------------------------------------------------------------------

class WhoGroup(_Item):
    description: str = ""
    mode: Literal["any", "all"] = "any"
    invert: bool = False
    objects: list[WhoObject] = Field(default_factory=list, max_length=MAX_OBJECTS_PER_GROUP)


class WhatGroup(_Item):
    description: str = ""
    mode: Literal["any", "all"] = "any"
    invert: bool = False
    objects: list[WhatObject] = Field(default_factory=list, max_length=MAX_OBJECTS_PER_GROUP)


class WhenGroup(_Item):
    description: str = ""
    mode: Literal["any", "all"] = "any"
    invert: bool = False
    objects: list[WhenObject] = Field(default_factory=list, max_length=MAX_OBJECTS_PER_GROUP)


class ActionGroup(_Item):
    """Actions run in order; at most one final action (accept, block, quarantine)."""

    description: str = ""
    objects: list[ActionObject] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_final(self) -> Self:
        finals = [a.type for a in self.objects if a.type in FINAL_ACTIONS]
        if len(finals) > 1:
            raise ValueError(f"an action group has at most one final action, not {finals}")
        return self


class Rule(_Item):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=128)
    priority: int = Field(ge=0, le=100)
    active: bool = True
    direction: Literal["in", "out", "both"] = "in"
    from_: list[str] = Field(default_factory=list, alias="from")
    to: list[str] = Field(default_factory=list)
    what: list[str] = Field(default_factory=list)
    when: list[str] = Field(default_factory=list)
    actions: list[str] = Field(min_length=1)


def _check_group_names(groups: dict[str, Any], category: str) -> None:
    for name in groups:
        if not _GROUP_NAME.match(name):
            raise ValueError(f"{category} group name {name!r}: 1 to 128 characters, no control characters")


class RuleSystemConfig(_Item):
    who: dict[str, WhoGroup] = Field(default_factory=dict)
    what: dict[str, WhatGroup] = Field(default_factory=dict)
    when: dict[str, WhenGroup] = Field(default_factory=dict)
    actions: dict[str, ActionGroup] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @model_validator(mode="after")
    def _references(self) -> Self:
        for category, groups in (("who", self.who), ("what", self.what), ("when", self.when),
                                 ("actions", self.actions)):
            _check_group_names(groups, category)
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
            for category, names, known in (("from", rule.from_, self.who), ("to", rule.to, self.who),
                                           ("what", rule.what, self.what), ("when", rule.when, self.when),
                                           ("actions", rule.actions, self.actions)):
                unknown = [n for n in names if n not in known]
                if unknown:
                    kind = "who" if category in ("from", "to") else category
                    raise ValueError(f"rule {rule.name!r}: {category} refers to unknown {kind} group(s) {unknown}; "
                                     f"known: {sorted(known)}")
        return self

    def ldap_profiles_used(self) -> set[str]:
        """Directory profiles the who objects name (the whole configuration checks that they exist)."""
        return {o.profile for g in self.who.values() for o in g.objects if o.type in ("ldap_user", "ldap_group")}

    def notification_templates_used(self) -> set[str]:
        """Names of `notifications.templates` the notify actions use (the whole configuration checks them)."""
        return {o.template for g in self.actions.values() for o in g.objects
                if isinstance(o, NotifyAction) and o.template}

    @classmethod
    def from_yaml(cls, text: str) -> RuleSystemConfig:
        """Parse and validate a YAML document (pydantic.ValidationError / ValueError on invalid input)."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"rule system YAML does not parse: {exc}") from None
        return cls.model_validate(data if data is not None else {})

    @classmethod
    def from_file(cls, path: str | Path) -> RuleSystemConfig:
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def defaults(cls) -> RuleSystemConfig:
        """The shipped rule set: PMG's default rules, priorities and active flags (defaults/rulesystem.yaml)."""
        text = resources.files("mailgw_libs.config").joinpath("defaults/rulesystem.yaml").read_text(encoding="utf-8")
        return cls.from_yaml(text)
