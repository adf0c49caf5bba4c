import pytest

from mailgw_libs import mime

PLAIN = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: Hello\r\n"
         b"Message-ID: <1@example.org>\r\n\r\nBody line\r\n")


def test_apply_header_changes_prepends_and_keeps_body() -> None:
    out = mime.apply_header_changes(PLAIN, [("X-Spam-Flag", "YES")], "[SPAM]")
    head, _, body = mime.split_head(out)
    assert body == b"Body line\r\n"
    assert out.startswith(b"X-Spam-Flag: YES\r\n")
    assert b"Subject: [SPAM] Hello\r\n" in head


def test_subject_tag_not_doubled() -> None:
    once = mime.apply_header_changes(PLAIN, [], "[SPAM]")
    twice = mime.apply_header_changes(once, [], "[SPAM]")
    assert twice.count(b"[SPAM]") == 1


def test_folded_and_encoded_subject() -> None:
    raw = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n aus Berlin\r\nFrom: a@b.c\r\n\r\nx"
    out = mime.apply_header_changes(raw, [], "[SPAM]")
    msg = mime.parse(out)
    assert mime.decoded_header(msg, "Subject").startswith("[SPAM] Grüße")
    assert out.endswith(b"\r\n\r\nx")


def test_remove_forged_headers() -> None:
    raw = b"X-Spam-Flag: NO\r\nX-Spam-Score:\r\n -3\r\nSubject: s\r\n\r\nbody"
    out = mime.apply_header_changes(raw, [], "", remove=("x-spam-flag", "X-Spam-Score"))
    assert b"X-Spam" not in out
    assert out.endswith(b"Subject: s\r\n\r\nbody")


def test_message_without_body_or_subject() -> None:
    out = mime.apply_header_changes(b"From: a@b.c\n", [("X-A", "1")], "[SPAM]")
    assert out.startswith(b"X-A: 1\n")
    assert b"Subject: [SPAM]" in out


def test_empty_message() -> None:
    out = mime.apply_header_changes(b"", [("X-A", "1")], "")
    assert out.startswith(b"X-A: 1")


def test_body_text_strips_html_and_decodes_charsets() -> None:
    raw = (b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"Gr=FC=DFe\r\n--b\r\nContent-Type: text/html\r\n\r\n<html><style>p{}</style><p>Hello <b>world</b></p>"
           b"<script>evil()</script></html>\r\n--b--\r\n")
    text = mime.body_text(mime.parse(raw))
    assert "Grüße" in text
    assert "Hello world" in text
    assert "evil" not in text and "p{}" not in text


def test_hostile_input_never_raises() -> None:
    samples = [
        b"\xff\xfe\x00garbage\r\n\r\n\x80\x81",
        b"Content-Type: multipart/mixed; boundary=\"\r\n\r\n--\r\n--",
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nabc",
        b"Subject: =?bogus?x?zzz?=\r\n\r\n",
        b"Content-Transfer-Encoding: base64\r\nContent-Type: image/png\r\n\r\n!!!notbase64",
    ]
    for raw in samples:
        msg = mime.parse(raw)
        mime.body_text(msg)
        mime.image_parts(msg)
        mime.decoded_header(msg, "Subject")
        mime.apply_header_changes(raw, [("X-A", "1")], "[T]")


def test_image_parts_found_by_type_and_name() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b\r\n"
           b"Content-Type: application/octet-stream; name=pic.JPG\r\n\r\nxx\r\n--b--\r\n")
    parts = mime.image_parts(mime.parse(raw))
    assert len(parts) == 2
    assert parts[0].payload.startswith(b"\x89PNG")


@pytest.mark.timeout(60)  # a hang guard, not a speed target: this took minutes before the stray-`<` escape
def test_html_with_many_unclosed_tags_does_not_hang() -> None:
    text = mime.html_to_text("<p>hello</p>" + '<a href="x' * 50_000 + " world")
    assert "hello" in text
