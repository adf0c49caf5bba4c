"""Body modifications of a message before delivery: attachment removal and disclaimers.

Both work on the parsed MIME tree (stdlib `email`, compat32: raw header strings are kept, and the
parts that are not touched are written back as they came). Header changes stay on the raw bytes
(`mime.apply_header_changes`), so a message that gets no body modification keeps its body byte
for byte (and its DKIM body hash).

Hostile input never raises: the parser records defects instead of failing, and a tree that
cannot be written back after removing attachments is replaced by the replacement text alone --
policy asked for the attachment to go, so it is never delivered because the MIME was broken.
"""

from __future__ import annotations

import email.errors
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.charset import BASE64, QP, Charset
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO

from . import mime
from .events import AttachmentRemoval, Disclaimer

log = logging.getLogger("mailgw.modify")

# The parts `mime.leaf_parts` numbers (the antivirus layer's part_index); parts past it are never removed
# by index, only by `all_attachments`.
MAX_INDEXED_PARTS = 1000
# A disclaimer longer than this is cut: a rule typo must not double the size of every message.
MAX_DISCLAIMER_CHARS = 16 * 1024
# Header set on a message whose disclaimer was skipped because it is signed or encrypted.
DISCLAIMER_SKIPPED_HEADER = "X-Mailgw-Disclaimer"

_SIGNED_OR_ENCRYPTED = frozenset({"multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
                                  "application/x-pkcs7-mime", "application/pgp-encrypted"})
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Modified:
    """The message after body modifications, and what was done (for logs and tests)."""

    raw: bytes
    removed: tuple[str, ...] = ()  # file names (or content types) of the removed parts
    disclaimer_parts: int = 0  # text parts that got a disclaimer
    skipped: str = ""  # why a disclaimer was not added ("signed or encrypted", "no text part")


def _leaves(msg: Message) -> Iterator[tuple[Message, Message | None]]:
    """Every leaf part with its parent multipart, in `msg.walk()` (= `mime.leaf_parts`) order."""
    stack: list[tuple[Message, Message | None]] = [(msg, None)]
    while stack:
        part, parent = stack.pop()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend((child, part) for child in reversed(payload) if isinstance(child, Message))
        else:
            yield part, parent


def _filename(part: Message) -> str:
    try:
        return str(part.get_filename() or "")
    except (ValueError, TypeError, LookupError):
        return ""


def is_attachment(part: Message) -> bool:
    """A leaf that is a file rather than the message text: named, disposition attachment, or not text."""
    disposition = str(part.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()
    if disposition == "attachment" or _filename(part):
        return True
    return part.get_content_maintype() not in ("text", "multipart", "message")


def _note(text: str, removed_name: str) -> str:
    return f"{text}\n\nRemoved: {removed_name}\n" if removed_name else f"{text}\n"


def _replacement(text: str, removed_name: str) -> Message:
    part = Message()
    _set_text(part, _note(text, removed_name), "plain")
    part["Content-Disposition"] = "inline"
    return part


def _set_text(part: Message, text: str, subtype: str, charset_hint: str = "") -> None:
    """Make `part` a text/<subtype> part holding `text` (the original charset when it can carry it)."""
    charset_name = "us-ascii" if text.isascii() else "utf-8"
    if charset_hint and not text.isascii():
        try:
            text.encode(charset_hint)
            charset_name = charset_hint
        except (LookupError, UnicodeError):
            pass
    had_version = "MIME-Version" in part
    for name in ("Content-Type", "Content-Transfer-Encoding"):
        del part[name]
    charset = Charset(charset_name)
    if charset_name != "us-ascii":
        # Base64 for long lines would hide the text from naive filters downstream; QP keeps it readable.
        charset.body_encoding = QP if charset.body_encoding != BASE64 or charset_name == "utf-8" else BASE64
    part.set_payload(text, charset)
    part.set_type(f"text/{subtype}")
    if not had_version:  # the stdlib adds one to every part it encodes; only the top level has it
        del part["MIME-Version"]


def _serialize(msg: Message) -> bytes:
    buffer = BytesIO()
    BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0).flatten(msg, linesep="\r\n")
    return buffer.getvalue()


def _remove(msg: Message, removal: AttachmentRemoval) -> list[str]:
    """Replace the chosen leaves of `msg` in place; the names (or types) of the removed parts."""
    wanted = set(removal.part_indexes)
    removed: list[str] = []
    # Replacements collected per parent, then each parent's list rebuilt once (10,000 parts stay linear).
    replacements: dict[int, Message] = {}
    parents: dict[int, Message] = {}
    for index, (part, parent) in enumerate(list(_leaves(msg))):
        if not ((index in wanted and index < MAX_INDEXED_PARTS) or (removal.all_attachments and is_attachment(part))):
            continue
        name = _filename(part) or part.get_content_type()
        removed.append(name)
        if parent is None:  # the whole message is the attachment: its body becomes the text
            _set_text(msg, _note(removal.replacement_text, name), "plain")
            del msg["Content-Disposition"]
            continue
        replacements[id(part)] = _replacement(removal.replacement_text, name)
        parents[id(parent)] = parent
    for parent in parents.values():
        children = parent.get_payload()
        assert isinstance(children, list)
        parent.set_payload([replacements.get(id(child), child) for child in children])
    return removed


def remove_attachments(raw: bytes, removal: AttachmentRemoval) -> Modified:
    """Replace the chosen attachments by a text/plain part with the replacement text; the rest of the
    MIME structure stays as it was. Nothing chosen: the bytes are returned unchanged."""
    return apply_body_changes(raw, removal, ())


def _body_replaced(raw: bytes, text: str) -> bytes:
    """The original header block with a plain-text body holding only `text` (last resort)."""
    body = Message()
    _set_text(body, text + "\n", "plain")
    head = mime.apply_header_changes(
        raw, [("Content-Type", body["Content-Type"]),
              ("Content-Transfer-Encoding", body["Content-Transfer-Encoding"] or "7bit")],
        remove=("content-type", "content-transfer-encoding"))
    header_block, sep, _ = mime.split_head(head)
    payload = body.get_payload()
    assert isinstance(payload, str)
    return header_block + (sep or b"\r\n\r\n") + payload.replace("\n", "\r\n").encode("ascii", "replace")


def signed_or_encrypted(msg: Message) -> bool:
    """Is any part signed or encrypted (S/MIME, PGP/MIME)? Changing such a body breaks it."""
    return any(part.get_content_type() in _SIGNED_OR_ENCRYPTED for part in msg.walk())


def _body_text_parts(msg: Message) -> tuple[Message | None, Message | None]:
    """The first text/plain and text/html parts that are the message text (not attachments, not inside
    an attached message)."""
    plain: Message | None = None
    html: Message | None = None
    stack: list[Message] = [msg]
    while stack and (plain is None or html is None):
        part = stack.pop()
        if part.get_content_maintype() == "message":
            continue  # a forwarded message keeps its own text
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(child for child in reversed(payload) if isinstance(child, Message))
            continue
        if is_attachment(part):
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = part
        elif kind == "text/html" and html is None:
            html = part
    return plain, html


def _decoded(part: Message) -> tuple[str, str]:
    charset = part.get_content_charset() or "us-ascii"
    try:
        "".encode(charset)
    except LookupError:
        charset = "latin-1"
    data = part.get_payload(decode=True)
    raw = data if isinstance(data, bytes) else b""
    return raw.decode(charset, "replace"), charset


def _html_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "<br>\n"))


def _with_html(html: str, snippet: str, position: str) -> str:
    if position == "top":
        match = _BODY_OPEN.search(html)
        return html[: match.end()] + snippet + html[match.end():] if match else snippet + html
    matches = list(_BODY_CLOSE.finditer(html))
    if matches:
        last = matches[-1]
        return html[: last.start()] + snippet + html[last.start():]
    return html + snippet


def _disclaim(msg: Message, disclaimers: Sequence[Disclaimer]) -> tuple[int, str]:
    """Add the disclaimers to `msg` in place: (text parts changed, why none was when skipped)."""
    if signed_or_encrypted(msg):
        return 0, "signed or encrypted"
    plain, html = _body_text_parts(msg)
    if plain is None and html is None:
        return 0, "no text part"
    changed = 0
    if plain is not None:
        text, charset = _decoded(plain)
        for disclaimer in disclaimers:
            note = disclaimer.text[:MAX_DISCLAIMER_CHARS]
            text = f"{note}\n\n{text}" if disclaimer.position == "top" else f"{text.rstrip()}\n\n{note}\n"
        _set_text(plain, text, "plain", charset)
        changed += 1
    if html is not None:
        text, charset = _decoded(html)
        for disclaimer in disclaimers:
            snippet = (disclaimer.html[:MAX_DISCLAIMER_CHARS] if disclaimer.html
                       else _html_escape(disclaimer.text[:MAX_DISCLAIMER_CHARS]))
            text = _with_html(text, f"<div>{snippet}</div>", disclaimer.position)
        _set_text(html, text, "html", charset)
        changed += 1
    return changed, ""


def add_disclaimers(raw: bytes, disclaimers: Sequence[Disclaimer]) -> Modified:
    """Add each disclaimer to the message text (the first text/plain and text/html body parts).

    Signed or encrypted mail is left as it is (a changed body would break the signature or cannot
    be changed at all); the caller says so in a header."""
    return apply_body_changes(raw, None, disclaimers)


def apply_body_changes(raw: bytes, removal: AttachmentRemoval | None,
                       disclaimers: Sequence[Disclaimer]) -> Modified:
    """Attachment removal, then disclaimers, on one parse of the message. Unchanged bytes when neither applies."""
    if removal is None and not disclaimers:
        return Modified(raw)
    msg = mime.parse(raw)
    removed = _remove(msg, removal) if removal is not None else []
    changed, skipped = _disclaim(msg, disclaimers) if disclaimers else (0, "")
    if not removed and not changed:
        return Modified(raw, skipped=skipped)
    try:
        out = _serialize(msg)
    except (email.errors.MessageError, ValueError, TypeError, LookupError, UnicodeError) as exc:
        if not removed:
            log.warning("cannot write the message back with its disclaimer; sent without it",
                        extra={"error": repr(exc)})
            return Modified(raw, skipped="unwritable MIME")
        log.warning("cannot write the message back after removing attachments; its body is replaced",
                    extra={"error": repr(exc)})
        out = _body_replaced(raw, removal.replacement_text if removal else "")
        changed = 0
    return Modified(out, removed=tuple(removed), disclaimer_parts=changed, skipped=skipped)
