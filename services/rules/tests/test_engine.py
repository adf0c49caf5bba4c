"""The rule engine with fakes: each object type and action, per-recipient split, priorities, lists, failures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailgw_libs.config.model import NotificationTemplate
from mailgw_libs.events import ArchiveMember, AttachmentInfo, Direction, Fate, HeaderChange
from mailgw_rules.engine import RuleEngine
from mailgw_rules.matching import DirectoryLookupFailed

from .support import RAW, SCORERS, FakeDirectory, FakeUserLists, config, envelope, verdicts

POLICY = {"antivirus": "tempfail", "ocr": "ignore"}

BASE = """
who:
  Partners: {objects: [{type: domain, domain: partner.org, subdomains: true}]}
  Boss: {objects: [{type: email, address: Boss@Example.com}]}
  Numbered: {objects: [{type: regex, pattern: 'user[0-9]+@example\\.com'}]}
  Office LAN: {objects: [{type: network, network: 198.51.100.0/24}, {type: ip, address: '2001:db8::7'}]}
  Staff: {objects: [{type: ldap_group, profile: corp, group: staff}]}
  Known users: {objects: [{type: ldap_user, profile: corp}]}
  Not partners: {invert: true, objects: [{type: domain, domain: partner.org}]}
what:
  Spam5: {objects: [{type: spam_level, level: 5}]}
  Virus: {objects: [{type: virus}]}
  Bulk symbol: {objects: [{type: symbol, name: BULK_MAIL}]}
  Bulk header: {objects: [{type: header, field: X-Mailer, pattern: 'bulk\\s+\\d+'}]}
  Exe: {objects: [{type: content_type, pattern: 'application/x-dosexec'}, {type: filename, pattern: '.*\\.exe'}]}
  Zipped exe: {objects: [{type: archive_filename, pattern: '.*\\.exe'}]}
  Zipped js: {objects: [{type: archive_content_type, pattern: 'application/javascript'}]}
  Big: {objects: [{type: size, min_bytes: 1000000}]}
  Big and bulk: {mode: all, objects: [{type: size, min_bytes: 50}, {type: symbol, name: BULK_MAIL}]}
when:
  Night: {objects: [{type: timeframe, days: [mon, tue, wed, thu, fri], start: '22:00', end: '06:00', timezone: Europe/Vienna}]}
actions:
  Accept: {objects: [{type: accept}]}
  Block: {objects: [{type: block}]}
  Quarantine: {objects: [{type: quarantine}]}
  Tag: {objects: [{type: subject_tag, tag: '[BULK]'}, {type: header, field: X-Bulk, value: '__SPAMLEVEL__ by __RULE__'}]}
  Strip: {objects: [{type: remove_attachments, text: 'removed __FILENAME__'}]}
  Strip all: {objects: [{type: remove_attachments, all: true, quarantine: false}]}
  Notify: {objects: [{type: notify, to: [admin, sender, recipients, audit@example.com],
                      subject: 'Rule __RULE__: __SUBJECT__',
                      body: 'from __SENDER__ to __RECEIVERS__ virus __VIRUS_INFO__'}]}
  Bcc: {objects: [{type: bcc, to: archive@example.com, original: false}]}
  Disclaimer: {objects: [{type: disclaimer, text: 'Sent via __RULE__', html: '<p>x</p>', position: top}]}
"""


def engine(rules: str, **kwargs: object) -> RuleEngine:
    return RuleEngine(config(BASE + "rules:\n" + rules), **kwargs)  # type: ignore[arg-type]


async def decide(eng: RuleEngine, **kwargs: object):  # type: ignore[no-untyped-def]
    env = kwargs.pop("env", envelope())
    vs = kwargs.pop("vs", verdicts())
    return await eng.decide(env, kwargs.pop("raw", RAW), vs, SCORERS, POLICY)  # type: ignore[arg-type]


@pytest.mark.parametrize(("group", "rcpt", "sender", "ip", "hit"), [
    ("Partners", "a@example.com", "x@partner.org", "192.0.2.1", True),
    ("Partners", "a@example.com", "x@mail.PARTNER.org", "192.0.2.1", True),
    ("Partners", "a@example.com", "x@notpartner.org", "192.0.2.1", False),
    ("Boss", "a@example.com", "BOSS@example.com", "192.0.2.1", True),
    ("Numbered", "a@example.com", "user42@example.com", "192.0.2.1", True),
    ("Numbered", "a@example.com", "user42@example.com.evil", "192.0.2.1", False),
    ("Office LAN", "a@example.com", "x@y.org", "198.51.100.9", True),
    ("Office LAN", "a@example.com", "x@y.org", "::ffff:198.51.100.9", True),
    ("Office LAN", "a@example.com", "x@y.org", "2001:db8::7", True),
    ("Office LAN", "a@example.com", "x@y.org", "198.51.101.9", False),
    ("Office LAN", "a@example.com", "x@y.org", "garbage", False),
    ("Staff", "a@example.com", "member@example.com", "192.0.2.1", True),
    ("Staff", "a@example.com", "other@example.com", "192.0.2.1", False),
    ("Known users", "a@example.com", "other@example.com", "192.0.2.1", True),
    ("Known users", "a@example.com", "stranger@example.com", "192.0.2.1", False),
    ("Not partners", "a@example.com", "x@partner.org", "192.0.2.1", False),
    ("Not partners", "a@example.com", "x@other.org", "192.0.2.1", True),
])
async def test_who_objects_in_from(group: str, rcpt: str, sender: str, ip: str, hit: bool) -> None:
    directory = FakeDirectory(users={"other@example.com", "member@example.com"}, groups={"staff": {"member@example.com"}})
    eng = engine(f"  - {{name: R, priority: 50, from: [{group}], actions: [Block]}}\n", directory=directory)
    action = await decide(eng, env=envelope([rcpt], sender=sender, client_ip=ip))
    assert (action.decisions[0].fate is Fate.BLOCK) is hit
    if hit:
        assert action.decisions[0].matched[0].objects == [f"from:{group}"]


async def test_to_groups_split_recipients() -> None:
    eng = engine("  - {name: Boss only, priority: 50, to: [Boss], actions: [Quarantine]}\n")
    action = await decide(eng, env=envelope(["boss@example.com", "a@example.com"]))
    fates = {d.recipient: d.fate for d in action.decisions}
    assert fates == {"boss@example.com": Fate.QUARANTINE, "a@example.com": Fate.ACCEPT}
    assert action.decisions[1].rule == "default" and action.decisions[1].matched == []


@pytest.mark.parametrize(("group", "vs_kwargs", "size", "hit"), [
    ("Spam5", {"spam": [("A", 3.0), ("B", 2.0)]}, 100, True),
    ("Spam5", {"spam": [("A", 4.9)]}, 100, False),
    ("Virus", {"viruses": ["Eicar-Test"]}, 100, True),
    ("Virus", {}, 100, False),
    ("Bulk symbol", {"spam": [("bulk_mail", 0.1)]}, 100, True),
    ("Bulk header", {}, 100, True),
    ("Big", {}, 2_000_000, True),
    ("Big", {}, 999_999, False),
    ("Big and bulk", {"spam": [("BULK_MAIL", 0.1)]}, 100, True),
    ("Big and bulk", {"spam": [("BULK_MAIL", 0.1)]}, 10, False),
])
async def test_what_objects(group: str, vs_kwargs: dict, size: int, hit: bool) -> None:  # type: ignore[type-arg]
    eng = engine(f"  - {{name: R, priority: 50, what: [{group}], actions: [Block]}}\n")
    vs = verdicts(*vs_kwargs.get("spam", []), viruses=vs_kwargs.get("viruses"))
    action = await decide(eng, env=envelope(size=size), vs=vs)
    assert (action.decisions[0].fate is Fate.BLOCK) is hit


INVENTORY = [
    AttachmentInfo(part_index=0, declared_type="text/plain"),
    AttachmentInfo(part_index=1, filename="setup.exe", declared_type="application/octet-stream",
                   detected_type="application/x-dosexec"),
    AttachmentInfo(part_index=2, filename="docs.zip", declared_type="application/zip",
                   archive_members=[ArchiveMember(name="a/run.EXE", content_type="application/x-dosexec"),
                                    ArchiveMember(name="x.js", content_type="application/javascript")]),
    AttachmentInfo(part_index=3, filename="photo.jpg", declared_type="image/jpeg"),
]


@pytest.mark.parametrize(("group", "parts"), [("Exe", [1]), ("Zipped exe", [2]), ("Zipped js", [2])])
async def test_part_objects_mark_parts_for_removal(group: str, parts: list[int]) -> None:
    eng = engine(f"  - {{name: R, priority: 50, what: [{group}], actions: [Strip]}}\n")
    action = await decide(eng, vs=verdicts(attachments=INVENTORY))
    removal = action.decisions[0].remove_attachments
    assert removal is not None and removal.part_indexes == parts and not removal.all_attachments
    assert removal.keep_original and action.decisions[0].fate is Fate.ACCEPT
    if group == "Exe":
        assert removal.replacement_text == "removed setup.exe"


async def test_parts_are_found_in_the_message_without_an_inventory() -> None:
    raw = (b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Run.EXE\"\r\n\r\n"
           b"MZ\r\n--b--\r\n")
    eng = engine("  - {name: R, priority: 50, what: [Exe], actions: [Strip]}\n")
    action = await decide(eng, raw=raw)
    assert action.decisions[0].remove_attachments is not None
    assert action.decisions[0].remove_attachments.part_indexes == [1]


async def test_remove_all_attachments_and_no_marked_parts() -> None:
    eng = engine("  - {name: All, priority: 50, actions: [Strip all]}\n  - {name: None, priority: 40, actions: [Strip]}\n")
    action = await decide(eng, vs=verdicts(attachments=INVENTORY))
    removal = action.decisions[0].remove_attachments
    assert removal is not None and removal.all_attachments and not removal.keep_original


async def test_non_final_actions_accumulate_and_macros_expand() -> None:
    eng = engine("""  - {name: Tagger, priority: 60, what: [Spam5], actions: [Tag, Disclaimer, Bcc, Notify]}
  - {name: Keeper, priority: 50, what: [Spam5], actions: [Quarantine]}
  - {name: Never, priority: 40, actions: [Block]}
""")
    env = envelope(["a@example.com", "b@example.com"], subject="Buy now\r\nX-Injected: yes")
    action = await decide(eng, env=env, vs=verdicts(("A", 6.0)))
    d = action.decisions[0]
    assert d.fate is Fate.QUARANTINE and d.rule == "Keeper" and d.quarantine_kind == "spam"
    assert d.subject_tag == "[BULK]"
    assert HeaderChange(name="X-Bulk", value="6.00 by Tagger") in d.add_headers
    assert "X-Bulk" in d.remove_headers and "X-Spam-Flag" in d.remove_headers
    assert d.disclaimers[0].text == "Sent via Tagger" and d.disclaimers[0].position == "top"
    assert [m.rule for m in d.matched] == ["Tagger", "Keeper"]
    assert d.matched[0].objects == ["what:Spam5"] and d.matched[0].actions == ["Tag", "Disclaimer", "Bcc", "Notify"]
    # One notification and one BCC for the message, not one per recipient.
    assert len(action.notifications) == 1 and len(action.bcc) == 1
    note = action.notifications[0]
    assert note.to == ["postmaster@example.com", "s@example.org", "a@example.com", "b@example.com", "audit@example.com"]
    assert note.subject == "Rule Tagger: Buy now X-Injected: yes"  # one line: no header injection
    assert note.text == "from s@example.org to a@example.com, b@example.com virus none"
    assert action.bcc[0].to == "archive@example.com" and action.bcc[0].original is False


async def test_priorities_and_first_final_wins() -> None:
    eng = engine("""  - {name: Low block, priority: 10, actions: [Block]}
  - {name: High accept, priority: 90, from: [Partners], actions: [Accept]}
  - {name: Inactive, priority: 100, active: false, actions: [Quarantine]}
""")
    assert (await decide(eng, env=envelope(sender="x@partner.org"))).decisions[0].rule == "High accept"
    assert (await decide(eng, env=envelope(sender="x@other.org"))).decisions[0].rule == "Low block"


async def test_direction() -> None:
    eng = engine("""  - {name: Out, priority: 50, direction: out, actions: [Block]}
  - {name: Both, priority: 40, direction: both, what: [Virus], actions: [Quarantine]}
""")
    assert (await decide(eng)).decisions[0].fate is Fate.ACCEPT
    assert (await decide(eng, env=envelope(direction=Direction.OUTBOUND))).decisions[0].rule == "Out"
    action = await decide(eng, vs=verdicts(viruses=["Eicar"]))
    assert action.decisions[0].rule == "Both" and action.decisions[0].quarantine_kind == "virus"


@pytest.mark.parametrize(("now", "hit"), [
    (datetime(2026, 1, 5, 22, 30, tzinfo=UTC), True),   # Mon 23:30 Vienna
    (datetime(2026, 1, 6, 4, 0, tzinfo=UTC), True),     # Tue 05:00 Vienna (Monday's night)
    (datetime(2026, 1, 6, 5, 0, tzinfo=UTC), False),    # Tue 06:00 Vienna: end is exclusive
    (datetime(2026, 1, 5, 12, 0, tzinfo=UTC), False),   # Mon noon
    (datetime(2026, 1, 10, 22, 30, tzinfo=UTC), False), # Sat 23:30: not a listed day
    (datetime(2026, 1, 10, 3, 0, tzinfo=UTC), True),    # Sat 04:00: Friday's night
    (datetime(2026, 7, 6, 20, 30, tzinfo=UTC), True),   # Mon 22:30 Vienna in summer time (UTC+2)
])
async def test_time_frames_with_an_injected_clock(now: datetime, hit: bool) -> None:
    eng = engine("  - {name: Night, priority: 50, when: [Night], actions: [Quarantine]}\n", clock=lambda: now)
    action = await decide(eng)
    assert (action.decisions[0].fate is Fate.QUARANTINE) is hit
    if hit:
        assert action.decisions[0].matched[0].objects == ["when:Night"]


async def test_per_user_welcomelist_and_blocklist() -> None:
    lists = FakeUserLists({("fan@example.com", "s@example.org"): "welcome", ("hater@example.com", "s@example.org"): "block"})
    eng = engine("""  - {name: Viruses, priority: 90, what: [Virus], actions: [Block]}
  - {name: Spam, priority: 50, what: [Spam5], actions: [Quarantine]}
""", userlists=lists)
    env = envelope(["fan@example.com", "hater@example.com", "plain@example.com"])
    action = await decide(eng, env=env, vs=verdicts(("A", 6.0)))
    fates = {d.recipient: (d.fate, d.spam) for d in action.decisions}
    assert fates == {"fan@example.com": (Fate.ACCEPT, False), "hater@example.com": (Fate.QUARANTINE, True),
                     "plain@example.com": (Fate.QUARANTINE, True)}
    # A blocklisted sender's ham becomes spam (+100) for that recipient only.
    action = await decide(eng, env=env, vs=verdicts(("A", 0.5)))
    assert [d.fate for d in action.decisions] == [Fate.ACCEPT, Fate.QUARANTINE, Fate.ACCEPT]
    # The welcomelist discards the spam result, not the virus result.
    action = await decide(eng, env=env, vs=verdicts(viruses=["Eicar"]))
    assert action.decisions[0].fate is Fate.BLOCK


async def test_scorer_failure_policy() -> None:
    eng = engine("  - {name: Blocklist, priority: 90, from: [Partners], actions: [Block]}\n")
    vs = verdicts()
    del vs["antivirus"]
    action = await decide(eng, vs=vs)
    d = action.decisions[0]
    assert d.fate is Fate.QUARANTINE and d.tempfail and d.quarantine_kind == "unscanned"
    assert action.missing_scorers == ["antivirus"] and d.rule == "tempfail-unscanned:antivirus"
    # A block stands even when a scorer is missing.
    assert (await decide(eng, vs=vs, env=envelope(sender="x@partner.org"))).decisions[0].fate is Fate.BLOCK
    # quarantine policy; failed verdicts count like missing ones; missing ocr is ignored.
    vs = verdicts()
    vs["antivirus"] = vs["antivirus"].model_copy(update={"failed": True})
    del vs["ocr"]
    action = await eng.decide(envelope(), RAW, vs, SCORERS, {"antivirus": "quarantine", "ocr": "ignore"})
    d = action.decisions[0]
    assert d.fate is Fate.QUARANTINE and not d.tempfail and action.failed_scorers == ["antivirus"]
    assert action.missing_scorers == ["ocr"]
    vs = verdicts()
    del vs["ocr"]
    assert (await decide(eng, vs=vs)).decisions[0].fate is Fate.ACCEPT


async def test_scorer_headers_go_on_accepted_mail_only() -> None:
    auth = HeaderChange(name="Authentication-Results", value="gw; spf=pass")
    vs = verdicts()
    vs["antispam"] = vs["antispam"].model_copy(update={"add_headers": [auth]})
    eng = engine("  - {name: Boss, priority: 50, to: [Boss], actions: [Quarantine]}\n")
    action = await decide(eng, vs=vs, env=envelope(["a@example.com", "boss@example.com"]))
    assert auth in action.decisions[0].add_headers and auth not in action.decisions[1].add_headers


async def test_sender_is_not_notified_for_the_null_sender() -> None:
    eng = engine("  - {name: N, priority: 50, actions: [Notify]}\n")
    action = await decide(eng, env=envelope(sender=""))
    assert "" not in action.notifications[0].to


async def test_notification_templates_by_name_and_the_admin_address() -> None:
    rules = """
what: {Virus: {objects: [{type: virus}]}}
actions: {Alert: {objects: [{type: notify, to: [admin], template: virus-alert, subject: unused, body: unused}]}}
rules: [{name: Alert, priority: 50, what: [Virus], actions: [Alert]}]
"""
    templates = {"virus-alert": NotificationTemplate(subject="Virus __VIRUS_INFO__ from __SENDER__\r\nBcc: x@y",
                                                     body="To __RECEIVERS__ (__ADMIN__)")}
    eng = RuleEngine(config(rules), admin_address="sec@example.com", templates=templates)
    note = (await decide(eng, vs=verdicts(viruses=["Eicar"]))).notifications[0]
    assert note.to == ["sec@example.com"]
    assert note.subject == "Virus Eicar from s@example.org Bcc: x@y"  # one line: no header injection via templates
    assert note.text == "To a@example.com (sec@example.com)"
    # A rule set naming a template nobody defined is refused when the engine is built (e.g. a fixed rule file).
    with pytest.raises(ValueError, match=r"unknown notification template\(s\) \['virus-alert'\]"):
        RuleEngine(config(rules))


async def test_ten_thousand_recipients(tmp_path: object) -> None:
    directory = FakeDirectory(users=set(), groups={"staff": {f"u{i}@example.com" for i in range(0, 10_000, 2)}})
    eng = engine("""  - {name: Staff, priority: 50, to: [Staff], actions: [Tag]}
  - {name: Numbered, priority: 40, to: [Numbered], actions: [Quarantine]}
""", directory=directory)
    rcpts = [f"u{i}@example.com" for i in range(10_000)]
    action = await decide(eng, env=envelope(rcpts))
    assert len(action.decisions) == 10_000
    assert sum(1 for d in action.decisions if d.subject_tag) == 5_000
    assert all(d.fate is Fate.ACCEPT for d in action.decisions)  # 'u1@' is not 'user1@'
    assert directory.calls == 10_000  # one lookup per recipient and group


async def test_hostile_message_content_does_not_break_evaluation() -> None:
    eng = engine("  - {name: H, priority: 50, what: [Bulk header, Exe], actions: [Block]}\n")
    for raw in [b"", b"\xff\xfe\x00garbage", b"X-Mailer: " + b"a" * 500_000 + b"\r\n\r\n",
                b"Content-Type: multipart/mixed; boundary=z\r\n\r\n" + b"--z\r\n\r\nx\r\n" * 5000]:
        action = await decide(eng, raw=raw)
        assert action.decisions[0].fate is Fate.ACCEPT
    # A pathological subject and sender in macros stay bounded.
    eng = engine("  - {name: N, priority: 50, actions: [Notify]}\n")
    action = await decide(eng, env=envelope(subject="__SUBJECT__" * 10_000, sender="a@b.c"))
    assert len(action.notifications[0].subject) <= 900 and "__SENDER__" not in action.notifications[0].text


async def test_directory_failure_postpones_instead_of_guessing() -> None:
    directory = FakeDirectory(users=set(), groups={"staff": {"a@example.com"}})
    eng = engine("  - {name: Staff, priority: 50, to: [Staff], actions: [Block]}\n", directory=directory)
    directory.down = True
    with pytest.raises(DirectoryLookupFailed, match="ldap group corp/staff"):
        await decide(eng)
    directory.down = False
    assert (await decide(eng)).decisions[0].fate is Fate.BLOCK
