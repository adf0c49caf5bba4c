"""Ratware rules (rules/cf/72_mailgw_ratware.cf, rules/ratware.py): each with a message that shows the sign
and a close real-client message that must not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailgw_antispam.rules.ratware import filetime_high_to_unix
from mailgw_antispam.scanner import scan

DATE = "Tue, 10 Sep 2002 14:20:15 +0200"
# A real Outlook Express 6 message sent at DATE: the Message-ID and the boundary carry its FILETIME.
OE_MSGID = "<003a01c258c8$f7f142e0$010ea8c0@desk>"
OE_BOUNDARY = "----=_NextPart_000_0037_01C258C8.FF37C620"
OE_HEADERS = {
    "From": '"Ann Smith" <ann@example.org>',
    "To": "<bob@example.net>",
    "Subject": "minutes of the meeting",
    "Date": DATE,
    "Message-ID": OE_MSGID,
    "MIME-Version": "1.0",
    "Content-Type": f'multipart/alternative; boundary="{OE_BOUNDARY}"',
    "X-Priority": "3",
    "X-MSMail-Priority": "Normal",
    "X-Mailer": "Microsoft Outlook Express 6.00.2600.0000",
    "X-MimeOLE": "Produced By Microsoft MimeOLE V6.00.2600.0000",
}
TEXT = "Hi Bob, here are the minutes of Monday's meeting. The next one is on the 24th, same room."


def build(headers: dict[str, str | None]) -> bytes:
    """A message from `headers` (a None value drops the header); multipart bodies use the declared boundary."""
    lines = [f"{k}: {v}" for k, v in headers.items() if v is not None]
    ctype = headers.get("Content-Type") or "text/plain"
    if "multipart" in ctype:
        boundary = ctype.split("boundary=", 1)[1].strip('"')
        body = (f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{TEXT}\r\n"
                f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<p>{TEXT}</p>\r\n--{boundary}--\r\n")
    else:
        body = TEXT + "\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def names(headers: dict[str, str | None]) -> set[str]:
    return {h.name for h in scan(build(headers))}


def oe(**changes: str | None) -> dict[str, str | None]:
    headers: dict[str, str | None] = dict(OE_HEADERS)
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


RATWARE = {"MGW_MSGID_MS_TIME_FORGED", "MGW_BOUNDARY_MS_TIME_FORGED", "MGW_MSGID_ZERO_PADDED",
           "MGW_MSGID_SHORT_MIXED", "MGW_MAILER_MSGID_MISMATCH", "MGW_OE_NO_MSMAIL_PRIO", "MGW_OE45_NO_MIMEOLE",
           "MGW_OE_OUTLOOK_HEADERS", "MGW_PRIO_WORD_WRONG_MAILER", "MGW_OUTLOOK_DATE_ZONE_NAME", "MGW_XMAILER_OUTLOOK_BUILD",
           "MGW_XMAILER_RANDOM", "MGW_CC_EMPTY_MAILER", "MGW_TO_EMPTY", "MGW_ADDR_ENCODED_LOCAL",
           "MGW_RCVD_DATE_AMPM", "MGW_DATE_YEAR_MANGLED", "MGW_DATE_ZONE_PLUSMINUS", "MGW_DATE_ZONE_WORDS"}


def test_filetime_of_a_real_message_id() -> None:
    when = datetime.fromtimestamp(filetime_high_to_unix("01c258c8"), UTC)
    assert abs((when - datetime(2002, 9, 10, 12, 20, tzinfo=UTC)).total_seconds()) < 3600


def test_a_real_outlook_express_message_shows_no_ratware_sign() -> None:
    assert not names(oe()) & RATWARE


def test_message_id_time_stamp() -> None:
    assert "MGW_MSGID_MS_TIME_FORGED" in names(oe(Message_ID="<000b00e07abc$3384a6b6$0ee26ee8@wpkvjy>"))
    # a clock a few hours off (wrong time zone) is not forgery
    assert "MGW_MSGID_MS_TIME_FORGED" not in names(oe(Date="Tue, 10 Sep 2002 23:20:15 +0200"))
    # newer Outlook form with a `$` before the `@`
    assert "MGW_MSGID_MS_TIME_FORGED" not in names(oe(Message_ID="<000001c258c8$f7f142e0$010ea8c0$@example.org>"))
    assert "MGW_MSGID_MS_TIME_FORGED" in names(oe(Message_ID="<000001c0aa00$f7f142e0$010ea8c0$@example.org>"))


def test_boundary_time_stamp_only_at_the_top() -> None:
    forged = "----=_NextPart_000_00B2_83B03D1E.C6530E24"
    assert "MGW_BOUNDARY_MS_TIME_FORGED" in names(oe(Content_Type=f'multipart/mixed; boundary="{forged}"'))
    assert "MGW_BOUNDARY_MS_TIME_FORGED" not in names(oe())


def test_zero_padded_message_id() -> None:
    assert "MGW_MSGID_ZERO_PADDED" in names(oe(Message_ID="<000023b8700d$00003a16$00004696@mail.example.net>"))
    assert "MGW_MSGID_ZERO_PADDED" not in names(oe(Message_ID="<000801c258c8$1c087840$0200a8c0@desk>"))


def test_short_mixed_case_message_id() -> None:
    plain = {"From": "ann@example.org", "To": "bob@example.net", "Subject": "hi", "Date": DATE}
    assert "MGW_MSGID_SHORT_MIXED" in names({**plain, "Message-ID": "<eWLkQ@mail.example.net>"})
    assert "MGW_MSGID_SHORT_MIXED" not in names({**plain, "Message-ID": "<abc123@mail.example.net>"})
    assert "MGW_MSGID_SHORT_MIXED" not in names({**plain, "Message-ID": "<3D64FA3C.13325.63A5960@localhost>"})


@pytest.mark.parametrize(("mailer", "good", "bad"), [
    ("Microsoft Outlook Express 6.00.2600.0000", OE_MSGID, "<200209101220.OAA05840@relay.example.net>"),
    ("The Bat! (v1.52f) Business", "<16279722375.20020910142015@example.org>", OE_MSGID),
    ("QUALCOMM Windows Eudora Version 5.1", "<5.1.0.14.0.20020910142015.032e1350@example.org>",
     "<20020910122015.7714C2C995@relay.example.net>"),
    ("AOL 7.0 for Windows US sub 118", "<ac.2ce1f831.2aa9fd36@aol.com>", "<200209101220.g8AC2kC1@relay.example.net>"),
    ("eGroups Message Poster", "<20020910122015.1234.56789.m7@egroups.com>", OE_MSGID),
    ("Internet Mail Service (5.5.2653.19)", "<5EC2AD6D2314D14FB64BDA287D25D9EF12B4F6@exchange1.example.org>",
     OE_MSGID),
    ("Microsoft Outlook IMO, Build 9.0.2416 (9.0.2910.0)", "<BCEFLMCEIJHPCPLGADJIGEEFCAAA.ann@example.org>",
     "<E17k2hm-00016W-00@relay.example.net>"),
])
def test_mailer_and_message_id_disagree(mailer: str, good: str, bad: str) -> None:
    assert "MGW_MAILER_MSGID_MISMATCH" in names(oe(X_Mailer=mailer, Message_ID=bad))
    assert "MGW_MAILER_MSGID_MISMATCH" not in names(oe(X_Mailer=mailer, Message_ID=good))


def test_hotmail_rewrites_the_outlook_express_message_id() -> None:
    assert "MGW_MAILER_MSGID_MISMATCH" not in names(oe(Message_ID="<OE17BcN7DaJHFzrK0pW0001e900@hotmail.com>"))


def test_outlook_express_without_its_own_headers() -> None:
    assert "MGW_OE_NO_MSMAIL_PRIO" in names(oe(X_MSMail_Priority=None))
    oe5 = "Microsoft Outlook Express 5.50.4133.2400"
    assert "MGW_OE45_NO_MIMEOLE" in names(oe(X_Mailer=oe5, X_MimeOLE=None))
    assert "MGW_OE45_NO_MIMEOLE" not in names(oe(X_Mailer=oe5, X_MimeOLE="Produced By Microsoft MimeOLE V5.50.4133.2400"))
    # the Macintosh edition writes neither
    mac = "Microsoft Outlook Express Macintosh Edition - 4.5 (0410)"
    found = names(oe(X_Mailer=mac, X_MimeOLE=None, X_MSMail_Priority=None, Message_ID="<B9A2@example.org>"))
    assert not found & {"MGW_OE_NO_MSMAIL_PRIO", "MGW_OE45_NO_MIMEOLE", "MGW_MAILER_MSGID_MISMATCH"}


def test_outlook_express_with_outlook_priority_headers() -> None:
    assert "MGW_OE_OUTLOOK_HEADERS" in names(oe(X_Priority="3 (Normal)"))
    assert "MGW_OE_OUTLOOK_HEADERS" in names(oe(Importance="Normal"))
    outlook = "Microsoft Outlook, Build 10.0.2627"
    assert "MGW_OE_OUTLOOK_HEADERS" not in names(oe(X_Mailer=outlook, X_Priority="3 (Normal)", Importance="Normal"))


def test_outlook_priority_wording_from_another_mailer() -> None:
    assert "MGW_PRIO_WORD_WRONG_MAILER" in names(oe(X_Mailer="MIME-tools 5.503 (Entity 5.501)", X_Priority="3 (Normal)"))
    for writer in ("Microsoft Outlook, Build 10.0.2627", "The Bat! (v1.61) Personal"):
        assert "MGW_PRIO_WORD_WRONG_MAILER" not in names(oe(X_Mailer=writer, X_Priority="3 (Normal)")), writer
    # a priority the user chose is written that way by more programs
    assert "MGW_PRIO_WORD_WRONG_MAILER" not in names(oe(X_Mailer="Mutt/1.4i", X_Priority="1 (Highest)"))


def test_outlook_date_with_zone_name() -> None:
    assert "MGW_OUTLOOK_DATE_ZONE_NAME" in names(oe(Date="Tue, 10 Sep 2002 08:20:15 -0400 (EDT)"))
    assert "MGW_OUTLOOK_DATE_ZONE_NAME" not in names(oe(X_Mailer="Mutt/1.4i", Date="Tue, 10 Sep 2002 08:20:15 -0400 (EDT)"))


def test_imitated_outlook_build_string() -> None:
    assert "MGW_XMAILER_OUTLOOK_BUILD" in names(oe(X_Mailer="Microsoft Outlook Build 10.0.2616"))
    assert "MGW_XMAILER_OUTLOOK_BUILD" not in names(oe(X_Mailer="Microsoft Outlook, Build 10.0.2616"))


def test_random_mailer() -> None:
    assert "MGW_XMAILER_RANDOM" in names(oe(X_Mailer="kmsOS3CsY2G6UT3hb"))
    assert "MGW_XMAILER_RANDOM" in names(oe(X_Mailer="ZjVqnSBZyGWrtRK5M"))
    for real in ("Mutt/1.4i", "MailEnable2000", "Apple Mail (2.482)", "ELM4PLUS25ZETA99", "WebMail4Business"):
        assert "MGW_XMAILER_RANDOM" not in names(oe(X_Mailer=real)), real


def test_empty_recipient_headers() -> None:
    assert "MGW_CC_EMPTY_MAILER" in names(oe(Cc=""))
    assert "MGW_CC_EMPTY_MAILER" not in names(oe(Cc="carol@example.net"))
    assert "MGW_CC_EMPTY_MAILER" not in names(oe(Cc="", X_Mailer=None))  # some Unix mailers leave it empty
    assert "MGW_TO_EMPTY" in names(oe(To=""))
    assert "MGW_TO_EMPTY" not in names(oe())


def test_encoded_word_as_local_part() -> None:
    assert "MGW_ADDR_ENCODED_LOCAL" in names(oe(From="=?iso-2022-jp?B?am9rb0BleGFtcGxlLmpw?=@example.org"))
    assert "MGW_ADDR_ENCODED_LOCAL" in names(oe(To="=?iso-2022-jp?B?MTIx?=@example.net"))
    assert "MGW_ADDR_ENCODED_LOCAL" not in names(oe(From="=?iso-8859-1?Q?Ren=E9_Dupont?= <rene@example.org>"))


def test_forged_received_with_twelve_hour_clock() -> None:
    forged = "from [10.1.2.3] by mx.example.com with SMTP; Aug, 28 2002 9:16:46 AM +0600"
    real = "from desk (host.example.org [192.0.2.5]) by mx.example.com with ESMTP; Tue, 10 Sep 2002 14:20:17 +0200"
    assert "MGW_RCVD_DATE_AMPM" in names(oe(Received=forged))
    assert "MGW_RCVD_DATE_AMPM" not in names(oe(Received=real))


def test_broken_dates() -> None:
    assert "MGW_DATE_YEAR_MANGLED" in names(oe(Date="Thu, 22 Aug 0102 12:07:35 +0800"))
    assert "MGW_DATE_ZONE_PLUSMINUS" in names(oe(Date="Tue, 17 Sep 2002 11:59:30 +-0500"))
    assert "MGW_DATE_ZONE_WORDS" in names(oe(Date="Fri, 30 Aug 02 21:48:08 Eastern Daylight Time"))
    found = names(oe(Date="Fri, 30 Aug 2002 21:48:08 -0400 (Eastern Daylight Time)"))
    assert not found & {"MGW_DATE_YEAR_MANGLED", "MGW_DATE_ZONE_PLUSMINUS", "MGW_DATE_ZONE_WORDS"}
