"""Rule actions applied by delivery: removed attachments, disclaimers, per-recipient copies, tempfail,
notifications and BCC. Unit tests with fakes, then the service against real Kafka, Redis and a sink."""

from __future__ import annotations

from mailgw_delivery.notify import notification_message
from mailgw_delivery.plan import plan_action
from mailgw_libs import frames, mime, modify, topics
from mailgw_libs.events import (
    AttachmentRemoval,
    Bcc,
    DeliveryStatus,
    Disclaimer,
    Fate,
    MailAction,
    Notification,
    RecipientDecision,
)

from .conftest import SinkFactory
from .support import TopicReader, action, decision, publish, running, settings_for, wait_until
from .test_fates import NOW, Bus, FakeLedger, FakeRelay, applier

WITH_ATTACHMENT = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: Invoice\r\n"
    b"Message-ID: <inv-1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find the invoice.\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name=invoice.exe\r\n"
    b"Content-Disposition: attachment; filename=invoice.exe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"TVqQAAMAAAAEAAAA\r\n--XX--\r\n"
)


def with_changes(recipient: str, removal: AttachmentRemoval | None = None,
                 disclaimers: list[Disclaimer] | None = None, tempfail: bool = False,
                 fate: Fate = Fate.ACCEPT) -> RecipientDecision:
    return decision(recipient, fate).model_copy(update={"remove_attachments": removal,
                                                        "disclaimers": disclaimers or [], "tempfail": tempfail})


def extras(act: MailAction, notifications: list[Notification], bcc: list[Bcc]) -> MailAction:
    return act.model_copy(update={"notifications": notifications, "bcc": bcc})


def test_recipients_with_different_body_changes_get_different_copies() -> None:
    strip = AttachmentRemoval(all_attachments=True)
    note = [Disclaimer(text="Confidential")]
    act = action(with_changes("a@x.test", strip), with_changes("b@x.test"), with_changes("c@x.test", strip),
                 with_changes("d@x.test", strip, note), with_changes("e@x.test", tempfail=True, fate=Fate.QUARANTINE))
    plan = plan_action(act)
    assert [g.recipients for g in plan.deliveries] == [("a@x.test", "c@x.test"), ("b@x.test",), ("d@x.test",)]
    assert [d.recipient for d in plan.tempfailed] == ["e@x.test"]
    stripped, untouched, both = (g.render(WITH_ATTACHMENT) for g in plan.deliveries)
    assert untouched is WITH_ATTACHMENT
    assert b"TVqQ" not in stripped and b"invoice.exe" in stripped and b"Confidential" not in stripped
    assert b"TVqQ" not in both and b"Confidential" in both


def test_skipped_disclaimer_is_said_in_a_header() -> None:
    signed = (b"From: a@x.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
              b"protocol=\"application/pkcs7-signature\"; boundary=S\r\n\r\n--S\r\nContent-Type: text/plain\r\n\r\n"
              b"text\r\n--S\r\nContent-Type: application/pkcs7-signature\r\n\r\nsig\r\n--S--\r\n")
    [group] = plan_action(action(with_changes("a@x.test", disclaimers=[Disclaimer(text="d")]))).deliveries
    out = group.render(signed)
    assert mime.split_head(out)[2] == mime.split_head(signed)[2]  # the signed body is untouched
    assert mime.parse(out)[modify.DISCLAIMER_SKIPPED_HEADER] == "skipped (signed or encrypted)"


async def test_tempfail_is_deferred_then_bounced_after_the_lifetime() -> None:
    relay, ledger, bus = FakeRelay(), FakeLedger(), Bus()
    act = action(with_changes("a@x.test", tempfail=True), decision("b@x.test"))
    results = await applier(relay, ledger, bus).apply(act, WITH_ATTACHMENT)
    assert {r.recipient: r.status for r in results} == {"a@x.test": DeliveryStatus.DEFERRED,
                                                        "b@x.test": DeliveryStatus.DELIVERED}
    assert [tx.recipients for tx in relay.sent] == [("b@x.test",)]
    assert len(bus.on(topics.retry_topic(60))) == 1
    later = applier(relay, ledger, bus, lifetime_s=60, now=NOW.replace(hour=9))
    results = await later.apply(act, WITH_ATTACHMENT, ["a@x.test"], attempt=2, first_attempt_at=NOW)
    assert [(r.recipient, r.status) for r in results] == [("a@x.test", DeliveryStatus.BOUNCED)]


async def test_notifications_and_bcc_become_actions_of_their_own_once() -> None:
    relay, ledger, bus = FakeRelay(), FakeLedger(), Bus()
    act = extras(action(with_changes("a@x.test", AttachmentRemoval(all_attachments=True))),
                 [Notification(to=["admin@x.test", "admin@x.test"], subject="Virus \u00fc", text="found",
                               html="<b>found</b>", attach_original=True)],
                 [Bcc(to="archive@x.test", original=True), Bcc(to="audit@x.test", original=False)])
    fates = applier(relay, ledger, bus)
    await fates.apply(act, WITH_ATTACHMENT)
    published = [frames.unpack(body, MailAction, 1 << 26) for body in bus.on(topics.MAIL_ACTIONS)]
    ids = [a.message_id for a, _ in published]
    assert ids == [f"{act.message_id}.notify1", f"{act.message_id}.bcc1", f"{act.message_id}.bcc2"]
    (note, note_raw), (bcc1, bcc1_raw), (bcc2, bcc2_raw) = published
    assert [d.recipient for d in note.decisions] == ["admin@x.test"] and note.mail_from == fates.postmaster
    parsed = mime.parse(note_raw)
    assert mime.decoded_header(parsed, "Subject") == "Virus \u00fc"
    assert [p.get_content_type() for p in parsed.walk()][:4] == ["multipart/mixed", "multipart/alternative",
                                                                 "text/plain", "text/html"]
    assert "message/rfc822" in [p.get_content_type() for p in parsed.walk()]
    assert bcc1.mail_from == act.mail_from and bcc1_raw == WITH_ATTACHMENT
    assert b"TVqQ" not in bcc2_raw and [d.recipient for d in bcc2.decisions] == ["audit@x.test"]
    # A retry of the same action does not publish them again.
    await fates.apply(act, WITH_ATTACHMENT, ["a@x.test"], attempt=2, first_attempt_at=NOW)
    assert len(bus.on(topics.MAIL_ACTIONS)) == 3


def test_hostile_notification_content() -> None:
    note = Notification(to=["a@x.test\r\nBcc: injected@x.test", "b@x.test"],
                        subject="s\r\nBcc: victim@x.test" + "x" * 10_000, text="t" * 1_000_000, attach_original=True)
    out = notification_message(note, b"\xff\xfe garbage without headers", "postmaster@x.test", NOW, "id", "gw.test")
    head = mime.parse_headers_only(out)
    assert head["Bcc"] is None and len(mime.decoded_header(head, "Subject")) <= 200


async def test_service_applies_actions_and_sends_notifications_and_bcc(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = extras(action(with_changes("bob@example.com", AttachmentRemoval(part_indexes=[1], replacement_text="Removed."),
                                     [Disclaimer(text="Scanned by the gateway", position="bottom")]),
                        decision("carol@example.com")),
                 [Notification(to=["admin@example.com"], subject="Attachment removed", text="invoice.exe")],
                 [Bcc(to="archive@example.com")])
    settings = settings_for(fresh_kafka, redis_url, sink.port, unique, postmaster="postmaster@gw.test")
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, WITH_ATTACHMENT), act.message_id)
            await wait_until(lambda: len(sink.handler.received) == 4, what="two copies, a notification and a bcc")
            await wait_until(lambda: len(reader.results(f"{act.message_id}.bcc1")) == 1, what="bcc result")
        finally:
            await reader.stop()
    [bob] = sink.handler.deliveries_to("bob@example.com")
    [carol] = sink.handler.deliveries_to("carol@example.com")
    [admin] = sink.handler.deliveries_to("admin@example.com")
    [archive] = sink.handler.deliveries_to("archive@example.com")
    assert carol.content == WITH_ATTACHMENT and archive.content == WITH_ATTACHMENT
    assert archive.mail_from == "alice@example.org" and admin.mail_from == "postmaster@gw.test"
    parts = mime.leaf_parts(mime.parse(bob.content))
    assert "Scanned by the gateway" in parts[0].text() and "Removed." in parts[1].text()
    assert b"TVqQ" not in bob.content
    assert b"invoice.exe" in admin.content and b"Subject: Attachment removed" in admin.content


async def test_service_retries_a_tempfail_decision_through_the_retry_topics(
        fresh_kafka: str, redis_url: str, unique: str, sinks: SinkFactory) -> None:
    sink = sinks()
    act = action(with_changes("bob@example.com", tempfail=True), decision("carol@example.com"))
    settings = settings_for(fresh_kafka, redis_url, sink.port, unique, retry_delays_s=[1], queue_lifetime_s=2)
    async with running(settings):
        reader = await TopicReader(fresh_kafka, topics.MAIL_DELIVERY).start()
        try:
            await publish(fresh_kafka, topics.MAIL_ACTIONS, frames.pack(act, WITH_ATTACHMENT), act.message_id)
            await wait_until(lambda: DeliveryStatus.BOUNCED in [r.status for r in reader.results(act.message_id)],
                             within_s=60, what="the tempfailed recipient to bounce after the lifetime")
            await wait_until(lambda: len(sink.handler.deliveries_to("alice@example.org")) == 1, what="the DSN")
        finally:
            await reader.stop()
    bob = [r for r in reader.results(act.message_id) if r.recipient == "bob@example.com"]
    assert bob[0].status is DeliveryStatus.DEFERRED and bob[-1].status is DeliveryStatus.BOUNCED
    assert len(bob) >= 2 and bob[-1].attempt >= 2  # went through the retry topic at least once
    assert sink.handler.deliveries_to("bob@example.com") == []
    assert len(sink.handler.deliveries_to("carol@example.com")) == 1
