"""MIME structure checks (`eval:` tests): how the message is built, not what it says.

The part tree itself is the `MIMETREE` pseudo-header (message.fingerprint), so rules can match whole
shapes; the tests here answer questions a regex on the tree cannot: is there readable text at all, do the
two halves of a multipart/alternative say the same thing, does an attachment's declared type match its
name and its first bytes, is the transfer encoding broken.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.message import Message

from .htmltricks import analyse_html
from .message import MessageView, MimeNode

EvalResult = tuple[int, str]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
EXECUTABLE_EXTENSIONS = (".exe", ".scr", ".pif", ".com", ".bat", ".cmd", ".vbs", ".js", ".jse", ".hta", ".lnk",
                         ".cpl", ".msi", ".wsf")
# First bytes of the formats whose declared type is checked against the content.
MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/jpg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
_WORD = re.compile(r"[^\W\d_]{3,}")
_B64_BAD = re.compile(rb"[^A-Za-z0-9+/=\s]")
_QP_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r?\n|$)", re.MULTILINE)
MIN_ALT_WORDS = 20


def _tree(view: MessageView) -> list[tuple[Message, int, bool]]:
    """The parsed nodes, in view.nodes order (message.build keeps them)."""
    tree: list[tuple[Message, int, bool]] = view.memo.get("tree", [])
    return tree


def _leaves(view: MessageView) -> list[MimeNode]:
    return [n for n in view.nodes if not n.multipart]


def _attachments(view: MessageView) -> list[MimeNode]:
    return [n for n in _leaves(view) if n.filename or n.disposition == "attachment"
            or not (n.content_type.startswith("text/") or n.content_type.startswith("message/"))]


def _visible_text_chars(view: MessageView) -> int:
    # body[0] is the Subject when there is one: leave it out
    subject = 1 if (view.header("Subject") or "").strip() else 0
    return sum(len(p) for p in view.body[subject:])


def check_mime_no_text_part(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Leaves exist but none is a readable text part (text/plain or text/html without a file name)."""
    if view.text_parts or not _leaves(view):
        return 0, ""
    return 1, ",".join(n.content_type for n in _leaves(view)[:5])


def check_mime_html_only(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """HTML text without a plain-text alternative."""
    types = {p.content_type for p in view.text_parts}
    return (1, "text/html only") if types == {"text/html"} else (0, "")


def check_mime_image_only(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Images (attached or referenced) with almost no text: the words are in the picture."""
    limit = int(args[0]) if args else 200
    images = sum(1 for n in _leaves(view) if n.content_type.startswith("image/")
                 or n.filename.lower().endswith(IMAGE_EXTENSIONS))
    images += analyse_html(view).images
    if not images:
        return 0, ""
    chars = _visible_text_chars(view)
    return (1, f"{images} images, {chars} chars of text") if chars < limit else (0, "")


def check_mime_attachment_only(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """An attachment and (next to) no text: "see attached"."""
    attachments = _attachments(view)
    if not attachments or _visible_text_chars(view) >= 20:
        return 0, ""
    return 1, attachments[0].filename or attachments[0].content_type


def check_mime_empty_body(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    if _attachments(view) or _visible_text_chars(view):
        return 0, ""
    return 1, "no text, no attachment"


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text[:50_000])}


def check_mime_alternative_mismatch(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """multipart/alternative whose plain and HTML halves share few words (a decoy text for filters)."""
    visible: list[str] = view.memo.get("part_plain", [])
    plain = [i for i, p in enumerate(view.text_parts) if p.in_alternative and p.content_type == "text/plain"]
    rich = [i for i, p in enumerate(view.text_parts) if p.in_alternative and p.content_type == "text/html"]
    if not plain or not rich or rich[0] >= len(visible):
        return 0, ""
    a, b = _words(view.text_parts[plain[0]].text), _words(visible[rich[0]])
    if len(a) < MIN_ALT_WORDS and len(b) < MIN_ALT_WORDS:
        return 0, ""
    overlap = len(a & b) / max(1, min(len(a), len(b)))
    threshold = float(args[0]) if args else 0.3
    return (1, f"{overlap:.0%} words shared") if overlap < threshold else (0, "")


def _head_bytes(view: MessageView, index: int) -> bytes:
    """The first decoded bytes of leaf `index` of view.msg (base64 decoded from its first 88 characters)."""
    part = _tree(view)[index][0]
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    if view.nodes[index].encoding == "base64":
        chunk = "".join(payload[:200].split())[:88]
        try:
            return base64.b64decode(chunk[: len(chunk) // 4 * 4])
        except (binascii.Error, ValueError):
            return b""
    return payload[:16].encode("latin-1", "replace")


def check_mime_type_mismatch(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A leaf whose declared type contradicts its file name or its first bytes."""
    for index, node in enumerate(view.nodes):
        if node.multipart:
            continue
        name = node.filename.lower()
        if name.endswith(EXECUTABLE_EXTENSIONS) and (node.content_type.startswith(("image/", "text/", "audio/"))):
            return 1, f"{node.filename} declared {node.content_type}"
        if name.endswith(IMAGE_EXTENSIONS) and node.content_type.startswith(("text/", "audio/", "video/")):
            return 1, f"{node.filename} declared {node.content_type}"
        magic = MAGIC.get(node.content_type)
        if magic and node.size >= 16:
            head = _head_bytes(view, index)
            if head and not head.startswith(magic):
                return 1, f"{node.content_type} that does not start like one"
    return 0, ""


def check_mime_depth(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    limit = int(args[0]) if args else 5
    depth = max((n.depth for n in view.nodes), default=0)
    return (1, f"nested {depth} deep") if depth > limit else (0, "")


def check_mime_part_count(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    limit = int(args[0]) if args else 100
    count = len(_leaves(view))
    return (1, f"{count} parts") if count > limit else (0, "")


def check_mime_defects(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """The MIME parser had to repair the structure (missing or unterminated boundary, bad headers)."""
    wanted = set(args)
    for node in view.nodes:
        for defect in node.defects:
            if not wanted or defect in wanted:
                return 1, defect
    return 0, ""


def check_mime_bad_transfer_encoding(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """base64 with characters outside its alphabet, or quoted-printable with invalid escapes."""
    for (part, _, _), node in zip(_tree(view), view.nodes, strict=False):
        if node.multipart or node.encoding not in ("base64", "quoted-printable"):
            continue
        payload = part.get_payload()
        if not isinstance(payload, str):
            continue
        data = payload[:200_000].encode("latin-1", "replace")
        if node.encoding == "base64" and _B64_BAD.search(data):
            return 1, "base64 with characters outside its alphabet"
        if node.encoding == "quoted-printable" and len(_QP_BAD_ESCAPE.findall(data)) >= 3:
            return 1, "quoted-printable with invalid escapes"
    return 0, ""


def check_mime_encoding_unknown(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    known = ("", "7bit", "8bit", "binary", "base64", "quoted-printable")
    for node in view.nodes:
        if node.encoding not in known and not node.encoding.startswith("x-"):
            return 1, node.encoding
    return 0, ""


EVALS = {
    "check_mime_no_text_part": check_mime_no_text_part,
    "check_mime_html_only": check_mime_html_only,
    "check_mime_image_only": check_mime_image_only,
    "check_mime_attachment_only": check_mime_attachment_only,
    "check_mime_empty_body": check_mime_empty_body,
    "check_mime_alternative_mismatch": check_mime_alternative_mismatch,
    "check_mime_type_mismatch": check_mime_type_mismatch,
    "check_mime_depth": check_mime_depth,
    "check_mime_part_count": check_mime_part_count,
    "check_mime_defects": check_mime_defects,
    "check_mime_bad_transfer_encoding": check_mime_bad_transfer_encoding,
    "check_mime_encoding_unknown": check_mime_encoding_unknown,
}
