"""HTML tricks (`eval:` tests): text a reader cannot see but a filter reads, and words spelled to dodge filters.

One linear pass of a tokenizer per HTML part keeps a stack of the styles in force (text colour,
background colour, font size, display/visibility) and counts the characters of text drawn invisibly
(colour equal to the background), in a tiny font, or hidden; images are counted for the image-only
check. The analysis is done once per message and shared by every rule (MessageView.memo).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field

from .message import MessageView

EvalResult = tuple[int, str]

MAX_HTML_CHARS = 300_000
MAX_STACK = 256
_VOID = frozenset({"br", "img", "hr", "meta", "input", "link", "area", "base", "col", "embed", "param", "source",
                   "wbr", "track"})
_SKIP = frozenset({"script", "style", "head", "title", "noscript"})
_NAMED_COLOURS = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255),
    "yellow": (255, 255, 0), "silver": (192, 192, 192), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "navy": (0, 0, 128), "maroon": (128, 0, 0), "purple": (128, 0, 128), "lime": (0, 255, 0),
    "aqua": (0, 255, 255), "fuchsia": (255, 0, 255), "olive": (128, 128, 0), "teal": (0, 128, 128),
    "whitesmoke": (245, 245, 245), "snow": (255, 250, 250), "ivory": (255, 255, 240),
}
_HEX = re.compile(r"#?([0-9a-f]{6}|[0-9a-f]{3})\b")
_RGB = re.compile(r"rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(px|pt|em|rem|%)?")
# Invisible characters used to split words: zero-width space/joiners, word joiner, BOM, soft hyphen.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_ZW_RE = re.compile(f"[{ZERO_WIDTH}]")
SIMILAR = 24  # per-channel difference under which two colours look the same
Colour = tuple[int, int, int]


def parse_colour(value: str) -> Colour | None:
    value = value.strip().lower()
    if value in _NAMED_COLOURS:
        return _NAMED_COLOURS[value]
    m = _RGB.search(value)
    if m:
        r, g, b = (min(255, int(x)) for x in m.groups())
        return r, g, b
    m = _HEX.match(value)
    if m:
        digits = m.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    return None


def font_px(value: str) -> float | None:
    """A CSS font-size in pixels (relative units against 16 px)."""
    m = _SIZE.match(value.strip().lower())
    if not m:
        return None
    number, unit = float(m.group(1)), m.group(2) or "px"
    return {"px": number, "pt": number * 4 / 3, "em": number * 16, "rem": number * 16, "%": number * 0.16}[unit]


_FONT_TAG_PX = {"1": 10.0, "2": 13.0, "-1": 10.0, "-2": 8.0, "-3": 6.0, "-4": 4.0, "0": 2.0}


@dataclass
class _Style:
    tag: str
    colour: Colour | None
    background: Colour | None
    px: float | None
    hidden: bool


@dataclass
class HtmlFacts:
    visible_chars: int = 0
    invisible_chars: int = 0     # drawn in (nearly) the background colour
    tiny_chars: int = 0          # font smaller than 4 px
    hidden_chars: int = 0        # display:none / visibility:hidden
    images: int = 0
    remote_images: int = 0
    samples: dict[str, str] = field(default_factory=dict)


def _style_map(attrs: list[tuple[str, str | None]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in attrs:
        if name == "style" and value:
            for decl in value.split(";")[:40]:
                key, _, val = decl.partition(":")
                out["css:" + key.strip().lower()] = val.strip().lower()
        elif value is not None:
            out[name] = value
    return out


_TOKENS = re.compile(r"<!--.*?-->|<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*)>|([^<]+)|<", re.DOTALL)
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_ENTITY = re.compile(r"&#?\w{1,8};")
_SPACE = re.compile(r"\s+")


def _attrs(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1).lower(), next((g for g in m.groups()[1:] if g is not None), ""))
            for m in _ATTR.finditer(text[:2000])]


class _Analyser:
    """A linear tokenizer (regex) rather than html.parser: this runs on every HTML part and the stdlib
    parser was the largest cost of a scan; styles only need tag names and attributes."""

    def __init__(self, facts: HtmlFacts) -> None:
        self.facts = facts
        self.stack: list[_Style] = [_Style("#root", None, (255, 255, 255), None, False)]
        self.skip = 0

    def feed(self, text: str) -> None:
        for m in _TOKENS.finditer(text):
            closing, tag, rest, data = m.groups()
            if data is not None:
                self.handle_data(data)
            elif tag is not None:
                if closing:
                    self.handle_endtag(tag.lower())
                else:
                    self.handle_starttag(tag.lower(), _attrs(rest))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
            return
        a = _style_map(attrs)
        if tag == "img":
            self.facts.images += 1
            if a.get("src", "").lower().startswith(("http:", "https:", "//")):
                self.facts.remote_images += 1
        if tag in _VOID or len(self.stack) >= MAX_STACK:
            return
        top = self.stack[-1]
        colour = parse_colour(html.unescape(a.get("css:color", a.get("color", "")))) or top.colour
        background = parse_colour(a.get("css:background-color", a.get("css:background", a.get("bgcolor", ""))))
        px = top.px
        if "css:font-size" in a:
            px = font_px(a["css:font-size"]) or px
        elif tag == "font" and a.get("size", "").strip() in _FONT_TAG_PX:
            px = _FONT_TAG_PX[a["size"].strip()]
        hidden = top.hidden or "none" in a.get("css:display", "") or "hidden" in a.get("css:visibility", "")
        self.stack.append(_Style(tag, colour, background or top.background, px, hidden))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        for i in range(len(self.stack) - 1, 0, -1):  # close up to the matching open tag, if any
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        data = _ENTITY.sub("x", data)
        n = len(_SPACE.sub("", data))
        if not n:
            return
        top, facts = self.stack[-1], self.facts
        if top.hidden:
            facts.hidden_chars += n
            facts.samples.setdefault("hidden", data.strip()[:60])
        elif top.colour is not None and top.background is not None and all(
                abs(x - y) < SIMILAR for x, y in zip(top.colour, top.background, strict=True)):
            facts.invisible_chars += n
            facts.samples.setdefault("invisible", data.strip()[:60])
        elif top.px is not None and top.px < 4:
            facts.tiny_chars += n
            facts.samples.setdefault("tiny", data.strip()[:60])
        else:
            facts.visible_chars += n


def analyse_html(view: MessageView) -> HtmlFacts:
    cached = view.memo.get("html")
    if isinstance(cached, HtmlFacts):
        return cached
    facts = HtmlFacts()
    budget = MAX_HTML_CHARS
    for part in view.text_parts:
        if part.content_type != "text/html" or budget <= 0:
            continue
        text = part.text[:budget]
        budget -= len(text)
        _Analyser(facts).feed(text)
    view.memo["html"] = facts
    return facts


def _ratio_hit(hidden: int, facts: HtmlFacts, args: tuple[str, ...], sample: str) -> EvalResult:
    """Hits when at least `min_chars` (arg 0, default 20) such characters make at least `ratio`
    (arg 1, default 0.05) of all text."""
    min_chars = int(args[0]) if args else 20
    ratio = float(args[1]) if len(args) > 1 else 0.05
    total = facts.visible_chars + facts.invisible_chars + facts.tiny_chars + facts.hidden_chars
    if hidden >= min_chars and hidden >= ratio * max(1, total):
        return 1, f"{hidden} of {total} chars: {facts.samples.get(sample, '')}"
    return 0, ""


def check_html_invisible_text(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    facts = analyse_html(view)
    return _ratio_hit(facts.invisible_chars, facts, args, "invisible")


def check_html_tiny_text(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    facts = analyse_html(view)
    return _ratio_hit(facts.tiny_chars, facts, args, "tiny")


def check_html_hidden_text(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    facts = analyse_html(view)
    return _ratio_hit(facts.hidden_chars, facts, args, "hidden")


def check_html_image_ratio(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """At least `images` (arg 0) images and fewer than `chars` (arg 1) visible characters of HTML text."""
    facts = analyse_html(view)
    images = int(args[0]) if args else 1
    chars = int(args[1]) if len(args) > 1 else 400
    if facts.images >= images and facts.visible_chars < chars:
        return 1, f"{facts.images} images, {facts.visible_chars} chars"
    return 0, ""


def check_zero_width_chars(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Zero-width characters or soft hyphens inside words (they split words a filter would know)."""
    minimum = int(args[0]) if args else 3
    count = 0
    for part in view.text_parts:
        text = html.unescape(part.text[:MAX_HTML_CHARS]) if part.content_type == "text/html" else part.text
        count += sum(1 for m in _ZW_RE.finditer(text[:MAX_HTML_CHARS])
                     if m.start() > 0 and text[m.start() - 1].isalpha()
                     and m.end() < len(text) and text[m.end()].isalpha())
        if count >= minimum:
            return 1, f"{count} zero-width characters inside words"
    return 0, ""


def check_text_blank_padding(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """check_text_blank_padding(lines): a plain-text part has at least `lines` blank lines in a row, which push
    what follows below the first screen (a footer or random words meant for filters, not for the reader).
    HTML source is not counted: blank lines there do not show."""
    minimum = int(args[0]) if args else 20
    pattern = re.compile(rf"\n(?:[ \t\r]*\n){{{minimum},}}")
    for part in view.text_parts:
        if part.content_type == "text/plain" and pattern.search(part.text[:MAX_HTML_CHARS]):
            return 1, f"{minimum}+ blank lines in a row"
    return 0, ""


# Words spam spells strangely to pass filters. A token that becomes one of these after undoing
# look-alike digits and separators, and was not written plainly, is an obfuscated word.
SPAM_VOCABULARY = frozenset({
    "viagra", "cialis", "levitra", "xanax", "valium", "vicodin", "phentermine", "pharmacy", "prescription",
    "mortgage", "refinance", "casino", "porn", "penis", "enlarge", "enlargement", "erection", "rolex",
    "replica", "lottery", "winner", "bitcoin", "investment", "cash", "money", "credit", "loan", "debt",
    "free", "sex", "sexy", "nude", "naked", "weight", "diet", "pills", "meds", "medication", "offer",
    "unsubscribe", "guaranteed", "million", "dollars", "income", "stock", "viagara", "adult", "teen",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "l",
                       "!": "i"})
_CANDIDATE = re.compile(r"[a-z][0-9@$|!]|[0-9@$|!][a-z]|[a-z][._*~-][a-z][._*~-][a-z]", re.IGNORECASE)
_EDGE_PUNCT = "\"'.,;:!?()[]{}<>"
_SEPARATORS = re.compile(r"[._*~ -]")


def _deobfuscate(token: str) -> str:
    return _SEPARATORS.sub("", token.lower()).translate(_LEET)


def check_obfuscated_words(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A spam word written with look-alike digits, separators or accents (v1agra, c-a-s-i-n-o, vïagra);
    letters spaced out by blanks are the rule MGW_SPACED_SPAM_WORD."""
    text = " ".join(p.decode("utf-8", "replace") for p in view.body[:400])[:MAX_HTML_CHARS]
    # only tokens with a letter next to a digit or symbol, or letters joined by separators, can be
    # look-alike spellings: a regex finds those few at C speed instead of a Python loop over every word
    position = 0
    while True:
        m = _CANDIDATE.search(text, position)
        if m is None:
            break
        start = max(text.rfind(" ", 0, m.start()), text.rfind("\n", 0, m.start())) + 1
        end = len(text)
        for blank in (" ", "\n"):
            found = text.find(blank, m.end())
            if found != -1:
                end = min(end, found)
        position = end
        core = text[start:end].strip(_EDGE_PUNCT)
        if not 4 <= len(core) <= 30 or core.isdigit():
            continue
        word = _deobfuscate(core)
        if word in SPAM_VOCABULARY and core.lower().strip("._*-") not in SPAM_VOCABULARY:
            return 1, core[:60]
    if not text.isascii():
        for token in text.split():
            if token.isascii() or not 4 <= len(token) <= 30:
                continue
            core = token.strip(_EDGE_PUNCT).lower()
            folded = "".join(c for c in unicodedata.normalize("NFKD", core) if not unicodedata.combining(c))
            if folded != core and folded in SPAM_VOCABULARY:
                return 1, token[:60]
    return 0, ""


EVALS = {
    "check_html_invisible_text": check_html_invisible_text,
    "check_html_tiny_text": check_html_tiny_text,
    "check_html_hidden_text": check_html_hidden_text,
    "check_html_image_ratio": check_html_image_ratio,
    "check_zero_width_chars": check_zero_width_chars,
    "check_text_blank_padding": check_text_blank_padding,
    "check_obfuscated_words": check_obfuscated_words,
}
