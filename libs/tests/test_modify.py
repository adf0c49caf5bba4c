"""Body modifications: attachment removal and disclaimers, on well-formed and hostile MIME."""

from __future__ import annotations

import time

from mailgw_libs import mime, modify
from mailgw_libs.events import AttachmentRemoval, Disclaimer

MIXED = (
    b"From: a@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\n"
    b"Content-Type: multipart/alternative; boundary=YY\r\n\r\n"
    b"--YY\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Hall=F6\r\n"
    b"--YY\r\nContent-Type: text/html\r\n\r\n<html><body><p>Hi</p></body></html>\r\n--YY--\r\n"
    b"--XX\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name=evil.exe\r\n"
    b"Content-Disposition: attachment; filename=evil.exe\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n"
    b"--XX--\r\n"
)


def leaves(raw: bytes) -> list[mime.Part]:
    return mime.leaf_parts(mime.parse(raw))


def test_removal_by_index_replaces_only_that_part_and_keeps_the_structure() -> None:
    before = leaves(MIXED)
    assert [p.filename for p in before] == ["", "", "report.pdf", "evil.exe"]
    out = modify.remove_attachments(MIXED, AttachmentRemoval(part_indexes=[3], replacement_text="Gone."))
    assert out.removed == ("evil.exe",)
    after = leaves(out.raw)
    assert [p.content_type for p in after] == ["text/plain", "text/html", "application/pdf", "text/plain"]
    assert after[2].payload == before[2].payload  # the other attachment is untouched
    assert "Gone." in after[3].text() and "evil.exe" in after[3].text()
    assert b"TVqQ" not in out.raw
    assert after[0].text().startswith("Hall\u00f6")


def test_all_attachments_and_nothing_chosen() -> None:
    out = modify.remove_attachments(MIXED, AttachmentRemoval(all_attachments=True))
    assert set(out.removed) == {"report.pdf", "evil.exe"}
    assert [p.content_type for p in leaves(out.raw)] == ["text/plain", "text/html", "text/plain", "text/plain"]
    unchanged = modify.remove_attachments(MIXED, AttachmentRemoval(part_indexes=[99]))
    assert unchanged.raw is MIXED and unchanged.removed == ()


def test_a_message_that_is_one_attachment_becomes_the_text() -> None:
    raw = (b"From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: application/zip; name=a.zip\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nUEsDBA==\r\n")
    out = modify.remove_attachments(raw, AttachmentRemoval(all_attachments=True, replacement_text="Removed."))
    parts = leaves(out.raw)
    assert len(parts) == 1 and parts[0].content_type == "text/plain" and "Removed." in parts[0].text()
    assert b"Subject: x" in out.raw


def test_disclaimer_on_text_and_html_top_and_bottom() -> None:
    out = modify.add_disclaimers(MIXED, [Disclaimer(text="Bottom \u00fc <b>", position="bottom"),
                                         Disclaimer(text="Top", html="<i>Top</i>", position="top")])
    assert out.disclaimer_parts == 2
    plain, html = leaves(out.raw)[:2]
    text = plain.text().replace("\r\n", "\n")
    assert text.startswith("Top\n\nHall\u00f6") and text.rstrip().endswith("Bottom \u00fc <b>")
    assert plain.charset == "iso-8859-1"  # the original charset carries the text
    assert "<body><div><i>Top</i></div><p>Hi</p><div>Bottom \u00fc &lt;b&gt;</div></body>" in html.text()
    assert [p.filename for p in leaves(out.raw)][2:] == ["report.pdf", "evil.exe"]


def test_signed_mail_gets_no_disclaimer() -> None:
    signed = (b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
              b"protocol=\"application/pgp-signature\"; boundary=S\r\n\r\n--S\r\nContent-Type: text/plain\r\n\r\n"
              b"signed text\r\n--S\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--S--\r\n")
    out = modify.add_disclaimers(signed, [Disclaimer(text="x")])
    assert out.raw is signed and out.skipped == "signed or encrypted"
    smime = b"From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAG\r\n"
    assert modify.add_disclaimers(smime, [Disclaimer(text="x")]).skipped == "signed or encrypted"


def test_forwarded_message_text_is_left_alone() -> None:
    raw = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n--B--\r\n")
    out = modify.add_disclaimers(raw, [Disclaimer(text="note")])
    assert out.skipped == "no text part" and out.raw is raw


def test_huge_disclaimer_is_cut() -> None:
    out = modify.add_disclaimers(MIXED, [Disclaimer(text="x" * 5_000_000)])
    assert len(out.raw) < len(MIXED) + 3 * modify.MAX_DISCLAIMER_CHARS


def test_malformed_mime_never_raises() -> None:
    hostile = [
        b"",
        b"no header at all",
        b"Content-Type: multipart/mixed\r\n\r\n--nobound\r\nContent-Type: text/plain\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nContent-Type: application/x; name=a.bin\r\n\r\nAAA",
        b"Content-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notb64",
        b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n--\r\n",
        b"Content-Type: text/html\r\n\r\n<body" + b"<" * 50_000,
        b"Subject: \xff\xfe\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\n\xff\xff\r\n--A--",
    ]
    for raw in hostile:
        removed = modify.apply_body_changes(raw, AttachmentRemoval(all_attachments=True, part_indexes=[0, 1, 5]),
                                            [Disclaimer(text="d", html="<b>d</b>")])
        assert isinstance(removed.raw, bytes)
    unterminated = modify.remove_attachments(hostile[3], AttachmentRemoval(all_attachments=True))
    assert unterminated.removed == ("a.bin",) and b"AAA" not in unterminated.raw


def test_ten_thousand_parts() -> None:
    parts = b"".join(b"--B\r\nContent-Type: application/octet-stream; name=f%d.bin\r\n\r\nDATA%d\r\n" % (i, i)
                     for i in range(10_000))
    raw = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n" + parts + b"--B--\r\n")
    started = time.monotonic()
    out = modify.apply_body_changes(raw, AttachmentRemoval(part_indexes=[1, 5000]), [Disclaimer(text="d")])
    assert out.removed == ("f0.bin",)  # index 5000 is past what leaf_parts numbers
    out = modify.apply_body_changes(raw, AttachmentRemoval(all_attachments=True), [])
    assert len(out.removed) == 10_000 and b"DATA9999" not in out.raw
    assert time.monotonic() - started < 120  # a hang guard, not a performance figure


def test_no_body_change_keeps_the_bytes() -> None:
    out = modify.apply_body_changes(MIXED, None, [])
    assert out.raw is MIXED
