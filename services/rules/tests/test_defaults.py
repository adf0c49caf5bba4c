"""The shipped rule set reproduces PMG's default rules and their documented behaviour."""

from __future__ import annotations

from mailgw_libs.config.rulesystem import EmailWho, RuleSystemConfig, WhoGroup
from mailgw_libs.events import AttachmentInfo, Direction, Fate, MailAction
from mailgw_rules.engine import RuleEngine

from .support import RAW, SCORERS, envelope, verdicts

POLICY = {"antivirus": "tempfail", "ocr": "ignore"}
DEFAULTS = RuleSystemConfig.defaults()


async def decide(cfg: RuleSystemConfig = DEFAULTS, **kwargs: object) -> MailAction:
    env = kwargs.pop("env", envelope())
    vs = kwargs.pop("vs", verdicts())
    return await RuleEngine(cfg).decide(env, RAW, vs, SCORERS, POLICY)  # type: ignore[arg-type]


def test_names_priorities_flags_and_directions_are_pmgs() -> None:
    table = {(r.name, r.priority, r.active, r.direction) for r in DEFAULTS.rules}
    assert table == {
        ("Blocklist", 98, True, "in"), ("Block Viruses", 96, True, "in"), ("Virus Alert", 96, True, "out"),
        ("Block Dangerous Files", 93, True, "in"), ("Modify Header", 90, True, "in"),
        ("Quarantine Office Files", 89, False, "in"), ("Block Multimedia Files", 87, False, "both"),
        ("Welcomelist", 85, True, "in"), ("Quarantine/Mark Spam (Level 3)", 80, True, "in"),
        ("Quarantine/Mark Spam (Level 5)", 81, False, "in"), ("Block Spam (Level 10)", 82, False, "in"),
        ("Block outgoing Spam", 70, False, "out"), ("Add Disclaimer", 60, False, "out"),
    }
    assert DEFAULTS.who["Blocklist"].objects == [] and DEFAULTS.who["Welcomelist"].objects == []


async def test_clean_mail_is_accepted_with_the_spam_level_header() -> None:
    action = await decide(vs=verdicts(("MISSING_DATE", 1.0)))
    d = action.decisions[0]
    assert d.fate is Fate.ACCEPT and d.rule == "default" and not d.spam and not d.subject_tag
    assert [(h.name, h.value) for h in d.add_headers] == [("X-SPAM-LEVEL", "Spam detection results: 1.00 (MISSING_DATE 1.00)")]
    assert [m.rule for m in d.matched] == ["Modify Header"]


async def test_spam_from_level_3_is_marked_and_quarantined() -> None:
    d = (await decide(vs=verdicts(("GTUBE", 1000.0)))).decisions[0]
    assert d.fate is Fate.QUARANTINE and d.quarantine_kind == "spam" and d.spam
    assert d.subject_tag == "[SPAM]" and d.rule == "Quarantine/Mark Spam (Level 3)"
    assert (await decide(vs=verdicts(("A", 2.9)))).decisions[0].fate is Fate.ACCEPT
    assert (await decide(vs=verdicts(("A", 3.0)))).decisions[0].fate is Fate.QUARANTINE


async def test_viruses_are_blocked_and_the_admin_notified() -> None:
    action = await decide(vs=verdicts(("GTUBE", 1000.0), viruses=["Eicar-Test-Signature"]))
    d = action.decisions[0]
    assert d.fate is Fate.BLOCK and d.rule == "Block Viruses"
    assert [n.to for n in action.notifications] == [["postmaster@example.com"]]
    assert "Eicar-Test-Signature" in action.notifications[0].text


async def test_outgoing_virus_alerts_sender_and_admin() -> None:
    action = await decide(env=envelope(direction=Direction.OUTBOUND), vs=verdicts(viruses=["Eicar"]))
    assert action.decisions[0].rule == "Virus Alert" and action.decisions[0].fate is Fate.BLOCK
    assert sorted(t for n in action.notifications for t in n.to) == ["postmaster@example.com", "s@example.org"]


async def test_outgoing_spam_and_no_header_change_outbound() -> None:
    d = (await decide(env=envelope(direction=Direction.OUTBOUND), vs=verdicts(("GTUBE", 1000.0)))).decisions[0]
    assert d.fate is Fate.ACCEPT and d.add_headers == [] and d.disclaimers == []


async def test_dangerous_files_are_removed_office_files_pass() -> None:
    inventory = [AttachmentInfo(part_index=0, declared_type="text/plain"),
                 AttachmentInfo(part_index=1, filename="invoice.pdf.lnk", declared_type="application/octet-stream"),
                 AttachmentInfo(part_index=2, filename="tool.bin", detected_type="application/x-dosexec"),
                 AttachmentInfo(part_index=3, filename="report.docx",
                                declared_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document")]
    d = (await decide(vs=verdicts(attachments=inventory))).decisions[0]
    assert d.fate is Fate.ACCEPT
    assert d.remove_attachments is not None and d.remove_attachments.part_indexes == [1, 2]
    assert d.remove_attachments.keep_original
    assert "invoice.pdf.lnk, tool.bin" in d.remove_attachments.replacement_text


async def test_blocklist_and_welcomelist_groups() -> None:
    groups = dict(DEFAULTS.who)
    groups["Blocklist"] = WhoGroup(objects=[EmailWho(type="email", address="bad@spam.test")])
    groups["Welcomelist"] = WhoGroup(objects=[EmailWho(type="email", address="friend@partner.test")])
    cfg = DEFAULTS.model_copy(update={"who": groups})
    assert (await decide(cfg, env=envelope(sender="bad@spam.test"))).decisions[0].rule == "Blocklist"
    d = (await decide(cfg, env=envelope(sender="friend@partner.test"), vs=verdicts(("GTUBE", 1000.0)))).decisions[0]
    assert d.fate is Fate.ACCEPT and d.rule == "Welcomelist"
    # Block Viruses (96) comes before the Welcomelist (85).
    d = (await decide(cfg, env=envelope(sender="friend@partner.test"), vs=verdicts(viruses=["Eicar"]))).decisions[0]
    assert d.fate is Fate.BLOCK


def activated(*names: str) -> RuleSystemConfig:
    """The shipped rule set with some of its inactive rules switched on (what an administrator does in PMG)."""
    assert all(any(r.name == n and not r.active for r in DEFAULTS.rules) for n in names)
    return DEFAULTS.model_copy(update={"rules": [r.model_copy(update={"active": True}) if r.name in names else r
                                                 for r in DEFAULTS.rules]})


async def test_inactive_spam_levels_5_and_10_when_switched_on() -> None:
    cfg = activated("Quarantine/Mark Spam (Level 5)", "Block Spam (Level 10)")
    d = (await decide(cfg, vs=verdicts(("A", 12.0)))).decisions[0]
    assert d.fate is Fate.BLOCK and d.rule == "Block Spam (Level 10)"  # priority 82 before 81 and 80
    d = (await decide(cfg, vs=verdicts(("A", 6.0)))).decisions[0]
    assert d.fate is Fate.QUARANTINE and d.rule == "Quarantine/Mark Spam (Level 5)" and d.subject_tag == "[SPAM]"
    assert (await decide(cfg, vs=verdicts(("A", 4.0)))).decisions[0].rule == "Quarantine/Mark Spam (Level 3)"


async def test_inactive_file_rules_when_switched_on() -> None:
    office = AttachmentInfo(part_index=1, filename="report.docx",
                            declared_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    song = AttachmentInfo(part_index=2, filename="song.mp3", declared_type="audio/mpeg")
    cfg = activated("Quarantine Office Files", "Block Multimedia Files")
    d = (await decide(cfg, vs=verdicts(attachments=[office]))).decisions[0]
    assert d.fate is Fate.QUARANTINE and d.rule == "Quarantine Office Files"
    # Multimedia is removed in both directions (the only default rule with direction "both").
    for direction in (Direction.INBOUND, Direction.OUTBOUND):
        d = (await decide(cfg, env=envelope(direction=direction), vs=verdicts(attachments=[song]))).decisions[0]
        assert d.fate is Fate.ACCEPT and d.remove_attachments is not None
        assert d.remove_attachments.part_indexes == [2]


async def test_inactive_outbound_rules_when_switched_on() -> None:
    cfg = activated("Block outgoing Spam", "Add Disclaimer")
    out = envelope(direction=Direction.OUTBOUND)
    action = await decide(cfg, env=out, vs=verdicts(("A", 4.0)))
    assert action.decisions[0].fate is Fate.BLOCK and action.decisions[0].rule == "Block outgoing Spam"
    assert sorted(t for n in action.notifications for t in n.to) == ["postmaster@example.com", "s@example.org"]
    d = (await decide(cfg, env=out, vs=verdicts(("A", 1.0)))).decisions[0]
    assert d.fate is Fate.ACCEPT and [x.text for x in d.disclaimers] == ["This e-mail was checked by the mail gateway."]
    assert (await decide(cfg, vs=verdicts(("A", 1.0)))).decisions[0].disclaimers == []  # inbound: none
