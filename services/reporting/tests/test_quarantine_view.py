"""The reading view of a quarantined message: headers, text, and hostile HTML rendered safely."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import TYPE_CHECKING

import httpx
import pytest

from mailgw_libs.events import Fate
from mailgw_reporting import render
from mailgw_reporting.store import ReportStore

if TYPE_CHECKING:
    from conftest import Scenario

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 16

HOSTILE = """<html><head><title>T</title>
<meta http-equiv="refresh" content="0;url=http://evil.test/refresh">
<base href="http://evil.test/"><link rel="stylesheet" href="http://evil.test/s.css">
<style>body { background: url(http://evil.test/style-bg) } @import url(http://evil.test/imp.css);</style>
<script src="http://evil.test/x.js"></script></head>
<body onload="alert('onload')" background="http://evil.test/body-bg">
<script>alert('script')</script>
<img src="http://evil.test/track.gif" onerror="alert('onerror')" srcset="http://evil.test/a.png 2x">
<img src="//evil.test/proto-relative.png"><img src="data:image/png;base64,iVBORw0KGgo=">
<img src="cid:logo@mail"><img src="cid:missing@mail">
<a href="javascript:alert('js')">js link</a> <a href="JaVaScRiPt:alert('js2')">js2</a>
<a href="https://shop.example/offer" onclick="alert('click')">the offer</a>
<div style="background-image: url('http://evil.test/div-bg'); color: red">styled</div>
<div style="background: u\\72l(http://evil.test/escaped)">escaped</div>
<p style="color: blue; font-weight: bold">kept style</p>
<svg onload="alert('svg')"><script>alert('svg-script')</script><image href="http://evil.test/svg.png"/></svg>
<iframe src="http://evil.test/frame1"><iframe src="http://evil.test/frame2"></iframe></iframe>
<object data="http://evil.test/obj"></object><embed src="http://evil.test/embed">
<form action="http://evil.test/form"><input name="q"><button formaction="http://evil.test/b">go</button></form>
<video poster="http://evil.test/poster.png" src="http://evil.test/v.mp4"></video>
<table background="http://evil.test/table-bg"><tr><td background="http://evil.test/td-bg">cell</td></tr></table>
<math><mi xlink:href="javascript:alert('math')">m</mi></math>
<p>Visible text of the offer</p>
</body></html>"""


def hostile_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Spammer <spam@evil.test>"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "=?utf-8?q?Gr=C3=BC=C3=9Fe?= and <script>"
    msg.set_content("Plain text version of the offer.")
    msg.add_alternative(HOSTILE, subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@mail>")
    msg.add_attachment(b"%PDF-1.4 junk", maintype="application", subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes()


def assert_inert(page: str) -> None:
    """Nothing that loads or runs: no remote URL outside link hrefs, no script, no handler, no active element."""
    lowered = page.lower()
    for word in ("<script", "javascript:", "onerror", "onload", "onclick", "<iframe", "<object", "<embed", "<svg",
                 "<meta", "<base", "<link", "<form", "<video", "url(", "srcset", "background=", "@import",
                 "<style", "data:image"):
        assert word not in lowered, word
    # The only remote URL left is the link target, as an href (shown, not loaded).
    for match in re.finditer(r"(?:https?:)?//[^\s\"'<>]+", page):
        before = page[max(0, match.start() - 6):match.start()]
        assert before.endswith('href="') and "evil.test" not in match.group(0), match.group(0)


def test_hostile_html_is_inert() -> None:
    view = render.view(hostile_message(), lambda i: f"/api/v1/quarantine/M/part/{i}")
    assert view.html is not None
    assert_inert(view.html)
    assert "Visible text of the offer" in view.html and "kept style" in view.html
    assert 'href="https://shop.example/offer"' in view.html and "nofollow" in view.html
    assert 'style="color:blue;font-weight:bold"' in view.html
    [inline] = re.findall(r'<img src="([^"]+)"', view.html)
    assert inline == f"/api/v1/quarantine/M/part/{view.inline_images['logo@mail']}"
    assert view.text.strip() == "Plain text version of the offer."
    headers = dict(view.headers)
    assert headers["Subject"] == "Grüße and <script>" and headers["From"] == "Spammer <spam@evil.test>"
    assert [(a["filename"], a["content_type"]) for a in view.attachments] == [
        ("", "image/png"), ("invoice.pdf", "application/pdf")]


@pytest.mark.parametrize("raw", [
    b"",
    b"no headers at all, just text",
    b"Content-Type: text/html\r\n\r\n" + b"<div>" * 50_000 + b"deep",
    b"Content-Type: text/html\r\n\r\n<a href=" * 20_000,
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<img src=cid:",
    b"Subject: =?bogus?q?x?=\r\nContent-Type: text/html; charset=no-such-charset\r\n\r\n\xff\xfe<b>x</b>",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 3000,
    b"Content-Type: text/html\r\n\r\n" + b"<p style='color:red'>" + b"x" * 5_000_000,
])
def test_malformed_and_oversized_messages_render(raw: bytes) -> None:
    view = render.view(raw, lambda i: f"/p/{i}")
    if view.html is not None:
        assert_inert(view.html)
        assert len(view.html) <= render.MAX_HTML_CHARS * 2
    assert len(view.text) <= render.MAX_TEXT_CHARS
    assert len(view.attachments) <= render.MAX_PARTS


async def test_view_html_and_inline_image_through_the_api(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    raw = hostile_message()
    rx = s.received([s.rcpt("bob")], raw=raw)
    s.action(rx, {s.rcpt("bob"): Fate.QUARANTINE}, spam=True, score=20)
    s.quarantine(rx, [s.rcpt("bob")], raw, score=20)
    await s.store_all(store)
    mid = rx.message_id

    r = await http.get(f"/api/v1/quarantine/{mid}/view")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["html_url"] == f"/api/v1/quarantine/{mid}/html"
    assert_inert(view["html"])
    assert {"name": "Subject", "value": "Grüße and <script>"} in view["headers"]

    r = await http.get(f"/api/v1/quarantine/{mid}/html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src 'self'" in csp and "sandbox" in csp and "script-src" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    head, body = r.text.split("<body>", 1)
    assert_inert(body)
    assert head == ('<!doctype html><html><head><meta charset="utf-8">'
                    f"<title>Quarantined message {mid}</title></head>")

    [src] = re.findall(r'<img src="([^"]+)"', r.text)
    image = await http.get(src)
    assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
    assert "default-src 'none'" in image.headers["content-security-policy"]
    # The PDF attachment is not an inline image; indexes out of range or not numbers are refused.
    attachments = {a["filename"]: a["index"] for a in view["attachments"]}
    assert (await http.get(f"/api/v1/quarantine/{mid}/part/{attachments['invoice.pdf']}")).status_code == 404
    assert (await http.get(f"/api/v1/quarantine/{mid}/part/99999")).status_code == 404
    assert (await http.get(f"/api/v1/quarantine/{mid}/part/-1")).status_code == 404
    assert (await http.get(f"/api/v1/quarantine/{mid}/part/x")).status_code == 404
    assert (await http.get("/api/v1/quarantine/01UNKNOWNUNKNOWN/view")).status_code == 404
    assert (await http.get("/api/v1/quarantine/bad%20id/html")).status_code == 400
    assert (await http.get(f"/api/v1/quarantine/{mid}/view?x=1")).status_code == 400


async def test_a_text_only_message_has_a_safe_html_view(
        http: httpx.AsyncClient, scenario: Scenario, store: ReportStore) -> None:
    s = scenario
    raw = s.raw("plain", "<script>alert(1)</script> & more")
    rx = s.received([s.rcpt("bob")], raw=raw)
    s.quarantine(rx, [s.rcpt("bob")], raw)
    await s.store_all(store)
    view = (await http.get(f"/api/v1/quarantine/{rx.message_id}/view")).json()
    assert view["html"] is None and view["html_url"] is None and "<script>" in view["text"]
    r = await http.get(f"/api/v1/quarantine/{rx.message_id}/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in r.text and "<script>" not in r.text
