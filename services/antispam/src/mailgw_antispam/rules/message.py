"""The texts a rule set looks at, built once per message (SpamAssassin's views of a message).

- header rules: decoded (RFC 2047), unfolded header values, all instances joined, each ending in "\\n";
  `:raw` keeps the undecoded, folded value; `:addr` the first address, `:name` its display name;
  pseudo-headers `ALL`, `ToCc`, `MESSAGEID`, `EnvelopeFrom`.
- body: the Subject, then the decoded text parts with HTML stripped, split into paragraphs (lines of a
  paragraph joined by a space), as SpamAssassin's body rules see it.
- rawbody: decoded text parts, HTML kept, line by line.
- full: the raw message.
- uri: links found in the text and in HTML `href`/`src` attributes.

All texts are UTF-8 bytes: rules match octets as Perl does. Every size is bounded.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from typing import Any

from mailgw_libs import mime

MAX_PARTS = 1000
MAX_HEADER_CHARS = 64 * 1024
MAX_URIS = 2000

_URI_IN_TEXT = re.compile(
    r"""(?:(?:https?|ftp)://|www\.)[^\s<>"'()\[\]{}]+|mailto:[^\s<>"'()]+""", re.IGNORECASE)
_HREF = re.compile(r"""\b(?:href|src|action)\s*=\s*(?:"([^"<>]{0,2000})"|'([^'<>]{0,2000})'|([^\s<>"']{1,2000}))""",
                   re.IGNORECASE)
# Bounded, linear-time pieces (hostile HTML must not make these quadratic).
_ANCHOR_TAG = re.compile(r"<a\s[^<>]{0,1000}>", re.IGNORECASE)
_TAG_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_ANCHOR_END = re.compile(r"</a\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
MAX_LINKS = 500
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def extract_uris(text: str, html_source: bool = False, limit: int = MAX_URIS) -> list[str]:
    """URIs in plain text, and (for HTML) in href/src/action attributes, in order, without duplicates."""
    found: list[str] = []
    if html_source:
        for m in _HREF.finditer(text):
            value = html.unescape(next(g for g in m.groups() if g is not None)).strip()
            if value and not value.startswith(("#", "cid:", "data:", "javascript:")):
                found.append(value)
            if len(found) >= limit:
                break
    for m in _URI_IN_TEXT.finditer(html.unescape(text) if html_source else text):
        found.append(m.group(0).rstrip(".,;:!?"))
        if len(found) >= limit:
            break
    out: list[str] = []
    seen: set[str] = set()
    for uri in found:
        forms = [uri]
        if uri.lower().startswith("www."):
            forms.append("http://" + uri)
        for form in forms:
            if form not in seen:
                seen.add(form)
                out.append(form)
    return out[:limit]


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).replace("\r", "")


def _decode_value(value: str) -> str:
    if value.isascii() and "=?" not in value:
        return _unfold(value).strip()  # nothing to decode (most headers): same result, far cheaper
    holder = Message()
    holder["X"] = value
    return _unfold(mime.decoded_header(holder, "X"))


@dataclass(frozen=True)
class MimeNode:
    depth: int
    content_type: str        # lower case, as parsed ("text/plain" when absent or invalid)
    declared_type: str       # the Content-Type value as written (empty when absent)
    filename: str
    disposition: str         # "attachment", "inline" or ""
    charset: str             # declared charset parameter, lower case ("" when none)
    encoding: str            # Content-Transfer-Encoding, lower case
    multipart: bool
    size: int                # bytes of the raw (undecoded) payload of a leaf
    defects: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextPart:
    content_type: str        # text/plain or text/html
    charset: str             # declared charset ("" when none)
    text: str                # decoded with the declared charset (replacement on errors)
    payload: bytes           # transfer-decoded bytes (bounded)
    in_alternative: bool     # a child of multipart/alternative


@dataclass
class MessageView:
    raw: bytes
    headers: list[tuple[str, str]]                 # (name, raw value), top level, in order
    body: list[bytes] = field(default_factory=list)
    rawbody: list[bytes] = field(default_factory=list)
    uris: list[bytes] = field(default_factory=list)
    part_headers: list[list[tuple[str, str]]] = field(default_factory=list)  # MIME parts (mimeheader)
    html_links: list[tuple[str, str]] = field(default_factory=list)  # (href, visible text) of <a> tags
    msg: Message | None = None
    # Every MIME node (containers too), in order, for the structure checks (mimestructure.py).
    nodes: list[MimeNode] = field(default_factory=list)
    # The decoded text parts (text/plain, text/html without file name), for HTML, charset and language checks.
    text_parts: list[TextPart] = field(default_factory=list)
    # Languages a message may be written in (ISO 639-1 codes); "all" accepts every language.
    ok_languages: tuple[str, ...] = ("all",)
    # Results the eval checks share (an analysis is done once per message, whatever number of rules use it).
    memo: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def header(self, name: str, modifier: str = "") -> str | None:
        """The value a header rule sees, or None when the header is absent."""
        key = (name, modifier)
        if key not in self._cache:
            self._cache[key] = self._header(name, modifier)
        return self._cache[key]

    def _values(self, name: str) -> list[str]:
        index = self.memo.get("header_index")
        if index is None:
            index = self.memo["header_index"] = {}
            for n, v in self.headers:
                index.setdefault(n.lower(), []).append(v)
        values: list[str] = index.get(name.lower(), [])
        return values

    def _header(self, name: str, modifier: str) -> str | None:
        raw_mode = "raw" in modifier
        # pseudo-headers are spelled exactly (a real header "MessageID" is not MESSAGEID)
        if name == "ALL":
            lines = [f"{n}: {v if raw_mode else _decode_value(v)}\n" for n, v in self.headers]
            return "".join(lines)[:MAX_HEADER_CHARS] if lines else None
        if name == "ToCc":
            values = self._values("To") + self._values("Cc")
        elif name == "MESSAGEID":
            values = (self._values("Message-Id") + self._values("Resent-Message-Id")
                      + self._values("X-Message-Id"))
        elif name == "MIMETREE":
            return fingerprint(self.nodes) + "\n" if self.nodes else None
        elif name == "EnvelopeFrom":
            values = self._values("Return-Path") or self._values("X-Envelope-From")
        else:
            values = self._values(name)
        if not values:
            return None
        if "first" in modifier:
            values = values[:1]
        elif "last" in modifier:
            values = values[-1:]
        if not raw_mode:
            values = [_decode_value(v) for v in values]
        if "addr" in modifier or "name" in modifier:
            pairs = getaddresses(values)
            if not pairs:
                return ""
            display, address = pairs[0]
            return (display if "name" in modifier else address) + "\n"
        return "".join(v.strip() + "\n" for v in values)[:MAX_HEADER_CHARS]

    def addresses(self, name: str) -> list[str]:
        """The addresses (lower case, with an @) of a header, parsed once per message: several checks compare
        From, To and Reply-To, and the e-mail address parser is slow."""
        key = "addresses:" + name
        found: list[str] | None = self.memo.get(key)
        if found is None:
            found = self.memo[key] = [a.lower() for _, a in getaddresses([self.header(name) or ""]) if "@" in a]
        return found

    def exists(self, name: str) -> bool:
        """`exists:Name` (pseudo-headers such as ToCc included)."""
        return self.header(name, "raw") is not None




def _anchors(text: str, limit: int) -> list[tuple[str, str]]:
    """(href, visible text) of <a href> elements, the text read up to 2,000 characters after the tag."""
    out: list[tuple[str, str]] = []
    for m in _ANCHOR_TAG.finditer(text):
        if len(out) >= limit:
            break
        href = _TAG_HREF.search(m.group(0))
        if not href:
            continue
        window = text[m.end(): m.end() + 2000]
        end = _ANCHOR_END.search(window)
        inner = window[: end.start()] if end else ""
        value = next(g for g in href.groups() if g is not None)
        out.append((html.unescape(value), html.unescape(_TAG.sub("", inner))))
    return out


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def fingerprint(nodes: list[MimeNode], limit: int = 60) -> str:
    """The part tree as one line, e.g. `multipart/alternative(text/plain,text/html)`: a stable
    fingerprint of how the message is built (header rules match it as the `MIMETREE` pseudo-header)."""
    out: list[str] = []
    depth_stack: list[int] = []
    for node in nodes[:limit]:
        while depth_stack and depth_stack[-1] >= node.depth:
            depth_stack.pop()
            out.append(")")
        if out and out[-1] not in ("(",):
            out.append(",")
        out.append(node.content_type + ("[att]" if node.filename or node.disposition == "attachment" else ""))
        if node.multipart:
            out.append("(")
            depth_stack.append(node.depth)
    out.extend(")" for _ in depth_stack)
    text = "".join(out).replace(",)", ")").replace("(,", "(")
    return text + (",..." if len(nodes) > limit else "")


_CHARSET_PARAM = re.compile(r"""\bcharset\s*=\s*["']?([^"';\s]{1,64})""", re.IGNORECASE)


def _charset_param(content_type: str) -> str:
    m = _CHARSET_PARAM.search(content_type)
    return m.group(1).lower() if m else ""


def _node(part: Message, depth: int) -> MimeNode:
    try:
        filename = str(part.get_filename() or "")
    except (ValueError, TypeError, LookupError):
        filename = ""
    try:
        disposition = (part.get_content_disposition() or "").lower()
    except (ValueError, TypeError, LookupError):
        disposition = ""
    multipart = part.is_multipart()
    payload = part.get_payload() if not multipart else None
    declared = str(part.get("Content-Type", "") or "")[:1000]
    return MimeNode(
        depth=depth, content_type=part.get_content_type().lower(),
        declared_type=declared[:200], filename=filename[:200],
        disposition=disposition, charset=_charset_param(declared),
        encoding=str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()[:40],
        multipart=multipart, size=len(payload) if isinstance(payload, str) else 0,
        defects=tuple(type(d).__name__ for d in part.defects[:10]))


def _tree(msg: Message, limit: int) -> list[tuple[Message, int, bool]]:
    """(part, depth, parent is multipart/alternative) for every node, without recursion, bounded."""
    out: list[tuple[Message, int, bool]] = []
    stack: list[tuple[Message, int, bool]] = [(msg, 0, False)]
    while stack and len(out) < limit:
        part, depth, in_alt = stack.pop()
        out.append((part, depth, in_alt))
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            alt = part.get_content_type().lower() == "multipart/alternative"
            stack.extend((p, depth + 1, alt) for p in reversed(payload) if isinstance(p, Message))
    return out


def _text_parts(tree: list[tuple[Message, int, bool]], nodes: list[MimeNode], max_chars: int) -> list[TextPart]:
    out: list[TextPart] = []
    total = 0
    for (part, _, in_alt), node in zip(tree, nodes, strict=False):
        if node.multipart or node.filename or node.content_type not in ("text/plain", "text/html"):
            continue
        if total >= max_chars:
            break
        leaf = mime.leaf_parts(part, 1)
        if not leaf:
            continue
        payload = leaf[0].payload[: max_chars - total]
        text = payload.decode(leaf[0].charset, "replace")
        total += len(payload)
        out.append(TextPart(node.content_type, node.charset, text, payload, in_alt))
    return out


def build(raw: bytes, max_chars: int = 1_000_000, msg: Message | None = None,
          ok_languages: tuple[str, ...] = ("all",)) -> MessageView:
    if msg is None:
        msg = mime.parse(raw)
    headers = [(str(k), str(v)) for k, v in msg.items()]
    view = MessageView(raw=raw[: max_chars * 4], headers=headers, msg=msg, ok_languages=ok_languages)
    tree = _tree(msg, MAX_PARTS * 4)
    view.nodes = [_node(part, depth) for part, depth, _ in tree]
    view.memo["tree"] = tree
    view.text_parts = _text_parts(tree, view.nodes, max_chars)
    subject = view.header("Subject") or ""
    texts: list[str] = []
    raw_lines: list[str] = []
    uris: list[str] = []
    view.part_headers = [[(str(k), str(v)) for k, v in part.items()]
                         for part, _, _ in tree if not part.is_multipart()][:MAX_PARTS]
    for text_part in view.text_parts:
        text = text_part.text
        raw_lines.extend(text.splitlines())
        is_html = text_part.content_type == "text/html"
        uris += extract_uris(text, html_source=is_html)
        if is_html:
            view.html_links += _anchors(text, MAX_LINKS - len(view.html_links))
        texts.append(mime.html_to_text(text) if is_html else text)
    view.memo["part_plain"] = texts  # the visible text of each text part, in view.text_parts order
    paragraphs = ([" ".join(subject.split())] if subject.strip() else []) + [
        p for t in texts for p in _paragraphs(t)]
    view.body = [p.encode("utf-8", "replace") for p in paragraphs]
    view.rawbody = [line.encode("utf-8", "replace") for line in raw_lines]
    view.uris = [u.encode("utf-8", "replace") for u in uris[:MAX_URIS]]
    return view
