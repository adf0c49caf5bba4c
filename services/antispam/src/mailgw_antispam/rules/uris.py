"""URI checks (`eval:` tests) that a regex on the link text cannot do well: hosts written as numbers,
look-alike (punycode, mixed-script) domains, link text showing another scheme or domain than the target,
data: links, and the registered domain (public suffix list, `publicsuffixlist`, which ships its list).
"""

from __future__ import annotations

import html
import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit

from .message import MessageView

EvalResult = tuple[int, str]

# Registered domains of URL shorteners (the link hides where it goes).
SHORTENERS = frozenset({
    "bit.ly", "bitly.com", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "rebrand.ly", "cutt.ly",
    "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "v.gd", "s.id", "lnkd.in", "soo.gd", "clck.ru", "qr.ae",
    "shorte.st", "adf.ly", "bl.ink", "short.io", "tr.im", "snip.ly", "x.co", "u.to", "urlz.fr", "0rz.tw",
    "smarturl.it", "zpr.io", "1url.com", "dwarfurl.com", "notlong.com", "snipurl.com", "makeashorterlink.com",
})
_DATA_URI = re.compile(r"""\b(?:href|src)\s*=\s*["']?\s*data:([a-z0-9.+/-]{0,60})""", re.IGNORECASE)
_DATA_HINT = re.compile(r"data:", re.IGNORECASE)  # cheap literal search before the attribute regex
_TEXT_URL = re.compile(r"^\s*(https?|ftp)://([^/\s:?#]+)", re.IGNORECASE)
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]+|\d{8,10}|(?:0[0-7]*|0x[0-9a-f]+|\d+)(?:\.(?:0[0-7]*|0x[0-9a-f]+|\d+)){1,3})$",
                           re.IGNORECASE)


@lru_cache(maxsize=1)
def _psl() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=4096)
def registered_domain(host: str) -> str:
    """example.co.uk for www.mail.example.co.uk; the host itself for IPs and unknown suffixes."""
    host = host.strip(".").lower()
    if not host or is_ip(host):
        return host
    psl = _psl()
    private = psl.privatesuffix(host)  # type: ignore[attr-defined]
    return str(private) if private else host


def is_ip(host: str) -> bool:
    """The host is an IP literal (brackets allowed), not a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def host_of(uri: str) -> str:
    """Lower-case host of an absolute URI ('' when it has none or cannot be parsed)."""
    if uri.lower().startswith("www."):
        uri = "http://" + uri
    try:
        parts = urlsplit(uri.strip())
        return (parts.hostname or "").lower()
    except ValueError:
        return ""


def _uris(view: MessageView) -> list[str]:
    return [u.decode("utf-8", "replace") for u in view.uris]


def _hosts(view: MessageView) -> list[str]:
    cached = view.memo.get("uri_hosts")
    if cached is None:
        cached = view.memo["uri_hosts"] = [h for h in (host_of(u) for u in _uris(view)) if h]
    hosts: list[str] = cached
    return hosts


def check_uri_numeric_host(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A host written as a number in decimal, hex or octal (http://3627734401/, http://0xd8.0x3a...)."""
    for host in _hosts(view):
        if _NUMERIC_HOST.match(host) and not re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", host):
            return 1, host
    return 0, ""


def check_uri_shortener(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    for host in _hosts(view):
        if registered_domain(host) in SHORTENERS:
            return 1, host
    return 0, ""


def _mixed_script(label: str) -> bool:
    from confusable_homoglyphs import confusables

    return bool(confusables.is_mixed_script(label)) or bool(confusables.is_dangerous(label))


def check_uri_lookalike_domain(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A host with an IDN label that mixes scripts or uses characters confusable with Latin ones."""
    import idna

    for host in dict.fromkeys(_hosts(view)):
        for label in host.split("."):
            if label.startswith("xn--"):
                try:
                    label = idna.decode(label)
                except (idna.IDNAError, UnicodeError, ValueError):
                    return 1, f"{host} (invalid punycode)"
            if not label.isascii() and _mixed_script(label):
                return 1, f"{host} ({label})"
    return 0, ""


def _anchor_pairs(view: MessageView) -> list[tuple[str, str]]:
    return [(href.strip(), text.strip()) for href, text in view.html_links]


def check_uri_scheme_mismatch(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Link text shows an https:// (or http://) URL but the link is another scheme (http, javascript, data, file)."""
    for href, text in _anchor_pairs(view):
        shown = _TEXT_URL.match(text)
        if not shown:
            continue
        target = href.split(":", 1)[0].lower() if ":" in href else ""
        if target in ("javascript", "data", "file", "vbscript"):
            return 1, f"shows {shown.group(1)}://, is {target}:"
        if shown.group(1).lower() == "https" and target == "http":
            return 1, "shows https://, goes to http://"
    return 0, ""


def check_uri_data_link(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A data: URI as link or image source (content smuggled inside the mail; data:text/html phishing)."""
    wanted = tuple(a.lower() for a in args)
    kinds: list[str] | None = view.memo.get("data_uris")
    if kinds is None:  # one scan per message, shared by the rules that use this test
        kinds = view.memo["data_uris"] = [
            m.group(1).lower() for part in view.text_parts if part.content_type == "text/html"
            and _DATA_HINT.search(part.text) for m in _DATA_URI.finditer(part.text[:300_000])][:100]
    for kind in kinds:
        if not wanted or kind.startswith(wanted):
            return 1, f"data:{kind}"
    return 0, ""


def check_uri_link_domain_mismatch(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Link text is a URL whose registered domain differs from the target's (phishing)."""
    for href, text in _anchor_pairs(view):
        shown = _TEXT_URL.match(html.unescape(text))
        target = host_of(href)
        if not shown or not target:
            continue
        a, b = registered_domain(shown.group(2)), registered_domain(target)
        if a and b and a != b:
            return 1, f"shows {a}, goes to {b}"
    return 0, ""


def check_uri_deep_subdomain(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """A host with many labels in front of its registered domain (paypal.com.secure.login.example.net)."""
    limit = int(args[0]) if args else 4
    for host in _hosts(view):
        if is_ip(host):
            continue
        extra = host.count(".") - registered_domain(host).count(".")
        if extra >= limit:
            return 1, host
    return 0, ""


EVALS = {
    "check_uri_numeric_host": check_uri_numeric_host,
    "check_uri_shortener": check_uri_shortener,
    "check_uri_lookalike_domain": check_uri_lookalike_domain,
    "check_uri_scheme_mismatch": check_uri_scheme_mismatch,
    "check_uri_data_link": check_uri_data_link,
    "check_uri_link_domain_mismatch": check_uri_link_domain_mismatch,
    "check_uri_deep_subdomain": check_uri_deep_subdomain,
}
