"""A quarantined message for reading: headers, text, and its HTML made safe to show.

The HTML of a quarantined message is hostile by assumption. It is sanitised with nh3 (ammonia):
an allow-list of formatting tags and attributes, so no script, event handler, form, frame, object,
SVG, meta refresh or base survives; script/style/frame contents are dropped with their tags. Nothing
is fetched when the result is shown: `<img>` keeps a source only when it is a `cid:` reference to an
image of the message itself (rewritten to the API's part URL), every other image source is removed;
inline styles keep only properties that cannot load anything, and a style that mentions url(),
image-set, expression or CSS escapes is removed whole; links stay visible (http, https, mailto) with
rel=noopener noreferrer nofollow, other schemes (javascript:, data:, ...) lose their href.
The HTML response adds a Content-Security-Policy (`HTML_CSP`) that forbids every remote load and
every script even if something slipped through.
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any

import nh3

from mailgw_libs import mime

MAX_PARTS = 1000
MAX_HEADERS = 500
MAX_HEADER_CHARS = 8 * 1024
MAX_TEXT_CHARS = 1_000_000
MAX_HTML_CHARS = 4_000_000
# The sanitiser's parser takes time quadratic in the nesting depth (50,000 nested <div>: 30 s); HTML
# nested deeper than this (estimated from the tags, unclosed ones counted) is shown as its text instead.
MAX_HTML_DEPTH = 2000
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,20})[^<>]{0,4000}?(/?)>")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr", "p", "li", "td", "tr", "th", "option", "dt", "dd"})

# Served for a cid: reference; never SVG (it can carry script).
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})

# No remote anything, no script, no plugins, no forms; inline styles (the sanitised style attributes)
# and the message's own images (same origin) only. `sandbox` makes the page a unique origin without scripts.
HTML_CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; font-src 'none'; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox")

# Headers of every response showing message content: the CSP, no MIME sniffing, no referrer, no caching.
SAFE_HEADERS = {"Content-Security-Policy": HTML_CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"} | {"font", "center"}
_DROP_WITH_CONTENT = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "noscript",
                      "svg", "math", "template", "title", "head", "textarea", "select", "xmp", "noembed",
                      "noframes", "audio", "video", "canvas"}
_ATTRIBUTES: dict[str, set[str]] = {tag: set(attrs) - {"cite"} for tag, attrs in
                                    copy.deepcopy(nh3.ALLOWED_ATTRIBUTES).items()}
_ATTRIBUTES["*"] = {"style", "title", "dir", "lang", "align", "valign", "width", "height", "bgcolor"}
_ATTRIBUTES["font"] = {"color", "size", "face"}
_ATTRIBUTES["table"] = _ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing"}
# Properties that take no URL: colours, fonts, text, box sizes and borders (border-image excluded).
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "font-variant",
    "text-align", "text-decoration", "text-transform", "text-indent", "line-height", "letter-spacing",
    "word-spacing", "white-space", "vertical-align", "direction", "display", "width", "height", "max-width",
    "min-width", "max-height", "min-height", "margin", "margin-top", "margin-right", "margin-bottom",
    "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style", "border-width",
    "border-collapse", "border-spacing", "border-radius", "table-layout",
}
# A style value containing any of these is dropped whole (CSS escapes could spell url( otherwise).
_STYLE_DANGER = ("url", "image", "expression", "\\", "@import", "javascript", "behavior", "binding", "&")
# cid: only so that <img src="cid:..."> reaches the filter, which rewrites it (or drops it); a link to cid: goes.
_URL_SCHEMES = {"http", "https", "mailto", "cid"}


@dataclass(frozen=True)
class MessageView:
    headers: list[tuple[str, str]]
    text: str
    html: str | None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # Images in the message referenced by content id: content id -> leaf part index.
    inline_images: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"headers": [{"name": n, "value": v} for n, v in self.headers], "text": self.text,
                "html": self.html, "attachments": self.attachments}


def sanitize_html(source: str, cid_url: Callable[[str], str | None]) -> str:
    """The safe HTML; `cid_url(content_id)` is the URL of an image of the message (None: not one of its images)."""

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            lowered = value.lower()
            return None if any(word in lowered for word in _STYLE_DANGER) else value
        if tag == "img" and attribute == "src":
            return cid_url(value[4:].strip().strip("<>")) if value.lower().startswith("cid:") else None
        if attribute == "href" and value.lower().startswith("cid:"):
            return None
        if attribute in ("bgcolor", "color", "face", "width", "height", "size") and any(
                ch in value for ch in "():;\\&"):
            return None
        return value

    return nh3.clean(
        source[:MAX_HTML_CHARS], tags=_TAGS, clean_content_tags=_DROP_WITH_CONTENT, attributes=_ATTRIBUTES,
        attribute_filter=attribute_filter, strip_comments=True, link_rel="noopener noreferrer nofollow",
        url_schemes=_URL_SCHEMES, filter_style_properties=_STYLE_PROPERTIES,
    )


def view(raw: bytes, cid_url: Callable[[int], str]) -> MessageView:
    """Headers, text and safe HTML of a raw message; `cid_url(part_index)` is where an inline image is served."""
    msg = mime.parse(raw)
    headers = [(str(name), _header_text(value)[:MAX_HEADER_CHARS]) for name, value in list(msg.items())[:MAX_HEADERS]]
    parts = mime.leaf_parts(msg, MAX_PARTS)
    text_part = next((p for p in parts if p.content_type == "text/plain" and not p.filename), None)
    html_part = next((p for p in parts if p.content_type == "text/html" and not p.filename), None)
    inline = {p.content_id.lower(): i for i, p in enumerate(parts)
              if p.content_id and p.content_type in INLINE_IMAGE_TYPES}
    safe_html = None
    if html_part is not None:
        def by_cid(content_id: str) -> str | None:
            index = inline.get(content_id.lower())
            return cid_url(index) if index is not None else None

        source = html_part.text()[:MAX_HTML_CHARS]
        if nesting_depth(source) < MAX_HTML_DEPTH:
            safe_html = sanitize_html(source, by_cid)
        else:
            safe_html = "<pre>" + html.escape(mime.html_to_text(source)) + "</pre>"
    if text_part is not None:
        text = text_part.text()
    elif html_part is not None:
        text = mime.html_to_text(html_part.text()[:MAX_HTML_CHARS])
    else:
        text = ""
    attachments = [
        {"index": i, "filename": p.filename, "content_type": p.content_type, "size": len(p.payload),
         "content_id": p.content_id}
        for i, p in enumerate(parts) if p is not text_part and p is not html_part
    ]
    return MessageView(headers=headers, text=text[:MAX_TEXT_CHARS], html=safe_html, attachments=attachments,
                       inline_images=inline)


def nesting_depth(source: str, stop_at: int = MAX_HTML_DEPTH) -> int:
    """An upper estimate of the element nesting of `source` (elements that close themselves are not counted);
    stops counting at `stop_at`."""
    depth = deepest = 0
    for match in _TAG.finditer(source):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if name in _VOID or self_closing:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        if depth > deepest:
            deepest = depth
            if deepest >= stop_at:
                break
    return deepest


def _header_text(value: Any) -> str:
    """A header value with RFC 2047 words decoded; undecodable ones as they are (hostile headers are shown)."""
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except (UnicodeError, LookupError, ValueError, HeaderParseError):
        return str(value).encode("utf-8", "replace").decode("utf-8", "replace").strip()


def inline_image(raw: bytes, index: int) -> tuple[bytes, str] | None:
    """The bytes and type of leaf part `index` if it is an image that may be shown inline."""
    parts = mime.leaf_parts(mime.parse(raw), MAX_PARTS)
    if not 0 <= index < len(parts) or parts[index].content_type not in INLINE_IMAGE_TYPES:
        return None
    return parts[index].payload, parts[index].content_type


def html_document(body: str, title: str) -> str:
    """A complete page around sanitised HTML."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head><body>{body}</body></html>")
