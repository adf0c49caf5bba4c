"""MIME helpers shared by the scorers and delivery.

Parsing never raises on hostile input: the stdlib parser records defects instead,
and every accessor here degrades to an empty value rather than an exception.
Header changes are made on the raw bytes so that the body (and its DKIM hash)
stays byte for byte what the sender sent.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.header import Header, decode_header, make_header
from email.message import Message
from html.parser import HTMLParser

# compat32 keeps raw header strings and tolerates anything; we decode on demand.
_POLICY = email.policy.compat32

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=_POLICY)


def decoded_header(msg: Message, name: str) -> str:
    """The header's value with RFC 2047 words decoded; '' when absent or undecodable."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return str(value).encode("utf-8", "replace").decode("utf-8", "replace").strip()


def parse_headers_only(raw: bytes, limit: int = 256 * 1024) -> Message:
    """Headers of a message (body not parsed): cheap enough for ingress."""
    match = _HEADER_END.search(raw, 0, limit)
    head = raw[: match.end()] if match else raw[:limit]
    return email.message_from_bytes(head, policy=_POLICY)


@dataclass(frozen=True)
class Part:
    content_type: str
    filename: str
    payload: bytes
    content_id: str = ""
    charset: str = "utf-8"

    def text(self) -> str:
        return self.payload.decode(self.charset, "replace")


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def _charset(part: Message) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        return "latin-1"
    return charset


def leaf_parts(msg: Message, max_parts: int = 1000) -> list[Part]:
    out: list[Part] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if len(out) >= max_parts:
            break
        try:
            filename = part.get_filename() or ""
        except (ValueError, TypeError, LookupError):
            filename = ""
        out.append(Part(
            content_type=part.get_content_type().lower(),
            filename=str(filename),
            payload=_payload(part),
            content_id=str(part.get("Content-ID", "")).strip("<> "),
            charset=_charset(part),
        ))
    return out


class _TextExtractor(HTMLParser):
    """Visible text of an HTML part: script/style dropped, block elements become line breaks."""

    _SKIP = frozenset({"script", "style", "head", "title", "noscript"})
    _BLOCK = frozenset({"p", "br", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)


# A `<` that opens no tag within 4,000 characters: the stdlib HTML parser is quadratic on unclosed
# tags (200,000 stray `<a href=` took minutes), so such a `<` is escaped before parsing.
_STRAY_LT = re.compile(r"<(?![^<>]{0,4000}>)")


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(_STRAY_LT.sub("&lt;", html))
        parser.close()
    except (AssertionError, ValueError):
        pass
    return re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.chunks)).strip()


def body_text(msg: Message, max_chars: int = 2_000_000) -> str:
    """Decoded text of all text/plain and text/html parts (HTML stripped), as one string."""
    texts: list[str] = []
    total = 0
    for part in leaf_parts(msg):
        if part.content_type not in ("text/plain", "text/html") or part.filename:
            continue
        text = part.text()
        if part.content_type == "text/html":
            text = html_to_text(text)
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "\n".join(texts)[:max_chars]


IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/tiff", "image/webp")


def image_parts(msg: Message) -> list[Part]:
    return [p for p in leaf_parts(msg) if p.content_type in IMAGE_TYPES
            or p.filename.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"))]


# --- changing headers on the raw bytes -------------------------------------------------------

def split_head(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, separator, body). A message without a blank line is all header."""
    match = _HEADER_END.search(raw)
    if not match:
        return raw, b"", b""
    return raw[: match.start()], raw[match.start(): match.end()], raw[match.end():]


def _eol(head: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in head else b"\n"


def encode_header_line(name: str, value: str) -> bytes:
    if value.isascii():
        folded = value.replace("\r", " ").replace("\n", " ")
        return f"{name}: {folded}".encode("ascii")
    return f"{name}: {Header(value, 'utf-8').encode()}".encode("ascii")


def _header_lines(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines joined (each item keeps its own line breaks)."""
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def apply_header_changes(raw: bytes, add: list[tuple[str, str]], subject_tag: str = "",
                         remove: tuple[str, ...] = ()) -> bytes:
    """Prepend headers, drop `remove` fields, and prefix the Subject with `subject_tag` (once)."""
    head, sep, body = split_head(raw)
    eol = _eol(head)
    if not head.endswith(b"\n"):
        head += eol
    fields = _header_lines(head)
    lowered = {r.lower() for r in remove}
    kept: list[bytes] = []
    subject_seen = False
    for field_bytes in fields:
        name = field_bytes.split(b":", 1)[0].decode("ascii", "replace").strip().lower()
        if name in lowered:
            continue
        if name == "subject" and subject_tag and not subject_seen:
            subject_seen = True
            msg = email.message_from_bytes(field_bytes + eol, policy=_POLICY)
            current = decoded_header(msg, "Subject")
            if not current.startswith(subject_tag):
                field_bytes = encode_header_line("Subject", f"{subject_tag} {current}".strip()) + eol
        kept.append(field_bytes)
    if subject_tag and not subject_seen:
        kept.append(encode_header_line("Subject", subject_tag) + eol)
    added = b"".join(encode_header_line(n, v) + eol for n, v in add)
    new_head = added + b"".join(kept)
    if not sep:
        return new_head + eol + body
    return new_head.rstrip(b"\r\n") + sep + body
