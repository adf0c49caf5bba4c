"""Grouping of an action's decisions into SMTP transactions, quarantine records and blocks."""

from __future__ import annotations

from mailgw_delivery.plan import DeliveryGroup, plan_action
from mailgw_libs import mime
from mailgw_libs.events import Fate

from .support import RAW, action, decision

SPAM = {"X-Spam-Flag": "YES", "X-Spam-Score": "6.1"}


def test_recipients_with_the_same_changes_share_a_transaction() -> None:
    plan = plan_action(action(
        decision("a@example.com", headers=SPAM, subject_tag="[SPAM]"),
        decision("b@example.com"),
        decision("c@example.com", headers=SPAM, subject_tag="[SPAM]"),
        decision("d@example.com"),
        decision("e@example.com", headers=SPAM),  # same headers, no tag: a different copy
    ))
    assert [(g.recipients, g.subject_tag) for g in plan.deliveries] == [
        (("a@example.com", "c@example.com"), "[SPAM]"),
        (("b@example.com", "d@example.com"), ""),
        (("e@example.com",), ""),
    ]
    assert plan.quarantines == [] and plan.blocked == []
    assert plan.delivery_recipients == ["a@example.com", "c@example.com", "b@example.com", "d@example.com",
                                        "e@example.com"]


def test_header_order_and_removals_are_part_of_the_group_key() -> None:
    plan = plan_action(action(
        decision("a@example.com", headers={"X-A": "1", "X-B": "2"}),
        decision("b@example.com", headers={"X-B": "2", "X-A": "1"}),
        decision("c@example.com", headers={"X-A": "1", "X-B": "2"}, remove=["X-Old"]),
        decision("d@example.com", headers={"X-A": "1", "X-B": "2"}, remove=["x-old ", "X-OLD"]),
    ))
    assert [g.recipients for g in plan.deliveries] == [
        ("a@example.com",), ("b@example.com",), ("c@example.com", "d@example.com")]
    assert plan.deliveries[2].remove_headers == ("x-old",)


def test_fates_are_split_and_quarantine_is_grouped_by_kind_and_rule() -> None:
    plan = plan_action(action(
        decision("a@example.com", Fate.BLOCK, rule="virus"),
        decision("b@example.com", Fate.QUARANTINE, rule="spam-high"),
        decision("c@example.com", Fate.QUARANTINE, rule="spam-high", quarantine_kind="spam"),
        decision("d@example.com", Fate.QUARANTINE, rule="unscanned", quarantine_kind="unscanned"),
        decision("e@example.com"),
    ))
    assert [d.recipient for d in plan.blocked] == ["a@example.com"]
    assert [(q.kind, q.rule, q.recipients) for q in plan.quarantines] == [
        ("spam", "spam-high", ("b@example.com", "c@example.com")),
        ("unscanned", "unscanned", ("d@example.com",)),
    ]
    assert plan.delivery_recipients == ["e@example.com"]


def test_a_retry_plans_only_its_recipients_and_duplicates_keep_the_first_decision() -> None:
    act = action(
        decision("a@example.com"),
        decision("b@example.com", subject_tag="[X]"),
        decision("a@example.com", Fate.BLOCK),
        decision("c@example.com", Fate.QUARANTINE),
    )
    assert plan_action(act).blocked == []
    retry = plan_action(act, ["b@example.com"])
    assert [g.recipients for g in retry.deliveries] == [("b@example.com",)]
    assert retry.quarantines == [] and retry.blocked == []


def test_render_changes_the_head_and_keeps_the_body() -> None:
    group = DeliveryGroup((("X-Spam-Flag", "YES"),), "[SPAM]", ("a@example.com",), ("x-spam-flag",))
    out = group.render(RAW)
    msg = mime.parse(out)
    assert msg.get_all("X-Spam-Flag") == ["YES"]
    assert msg["Subject"] == "[SPAM] Quarterly report"
    assert mime.split_head(out)[2] == mime.split_head(RAW)[2]
    assert DeliveryGroup((), "", ("a@example.com",)).render(RAW) is RAW
