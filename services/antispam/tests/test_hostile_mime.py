"""Hostile MIME: every message gets a clear verdict (a list of hits, no exception) within a bound.

The bounds are generous hang guards (a quadratic or exponential path takes minutes), not speed targets.
"""

from __future__ import annotations

import time

import pytest

from mailgw_antispam.scanner import scan

HEAD = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
HANG_GUARD_S = 60.0


def nested(depth: int) -> bytes:
    parts = [HEAD + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    for i in range(1, depth):
        parts.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i))
    parts.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % (depth - 1))
    for i in range(depth - 1, -1, -1):
        parts.append(b"--b%d--\r\n" % i)
    return b"".join(parts)


def many_parts(count: int) -> bytes:
    body = b"".join(b"--m\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count))
    return HEAD + b"Content-Type: multipart/mixed; boundary=m\r\n\r\n" + body + b"--m--\r\n"


CASES = {
    "deep nesting (2,000 levels)": nested(2000),
    "10,000 parts": many_parts(10_000),
    "broken base64": HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b"!!!!====????" * 50_000 + b"\r\n",
    "broken quoted-printable": HEAD + b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + b"=Z=\r\n=4" * 100_000,
    "unknown charsets": HEAD + b"Content-Type: multipart/mixed; boundary=c\r\n\r\n"
    + b"".join(b"--c\r\nContent-Type: text/plain; charset=x-bogus-%d\r\n\r\n\xff\xfe text\r\n" % i for i in range(300))
    + b"--c--\r\n",
    "huge header": b"From: a@example.org\r\nSubject: " + b"A" * 2_000_000 + b"\r\n\r\nbody\r\n",
    "100,000 header lines": b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\nbody\r\n",
    "huge folded Received": b"Received: from x\r\n" + b"\tby y\r\n" * 200_000 + b"\r\nbody\r\n",
    "unclosed HTML tags": HEAD + b"Content-Type: text/html\r\n\r\n" + b"<a href=" * 200_000,
    "nested HTML styles": HEAD + b"Content-Type: text/html\r\n\r\n"
    + b'<font color="#fff"><span style="font-size:1px">x' * 50_000,
    "no header/body separator": b"X" * 3_000_000,
    "binary garbage": bytes(range(256)) * 20_000,
    "empty": b"",
    "boundary never used": HEAD + b"Content-Type: multipart/alternative; boundary=nope\r\n\r\n" + b"text\r\n" * 10_000,
    "message/rfc822 chain": HEAD + b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"Subject: in\r\n\r\nend\r\n",
    "many links": HEAD + b"Content-Type: text/html\r\n\r\n"
    + b"".join(b'<a href="http://h%d.example.com/">https://x%d.example.org/</a>' % (i, i) for i in range(20_000)),
    "huge punycode hosts": HEAD + b"\r\n" + b" http://xn--" + b"a" * 5000 + b".com/" * 100,
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_message_gets_a_verdict(name: str) -> None:
    started = time.monotonic()
    hits = scan(CASES[name])
    assert isinstance(hits, list)
    assert all(h.name and isinstance(h.score, float) for h in hits)
    assert time.monotonic() - started < HANG_GUARD_S, name


def test_structure_symbols_on_hostile_input() -> None:
    assert "MGW_MIME_DEEP" in {h.name for h in scan(nested(50))}
    assert "MGW_MIME_MANY_PARTS" in {h.name for h in scan(many_parts(10_000))}
