"""Built-in `eval:` tests the engine implements. Unknown ones are reported unsupported at load time.

Each takes the message view and the rule's string arguments and returns a hit count (0 = no hit) and a
detail. SpamAssassin names are used where our test has the same meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from . import headerchecks, htmltricks, language, mimestructure, ratware, uris
from .message import MessageView

EvalFn = Callable[[MessageView, tuple[str, ...]], tuple[int, str]]


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".>") if "@" in address else ""


def check_date_invalid(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    value = (view.header("Date") or "").strip()
    if not value:
        return 0, ""
    try:
        ok = parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError, OverflowError):
        ok = False
    return (0, "") if ok else (1, value[:100])


def check_replyto_other_domain(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    if view.exists("List-Id") or view.exists("List-Post"):
        return 0, ""  # mailing lists set Reply-To to the list on purpose
    from_addrs, reply_addrs = view.addresses("From"), view.addresses("Reply-To")
    if not from_addrs or not reply_addrs:
        return 0, ""
    f, r = _domain(from_addrs[0]), _domain(reply_addrs[0])
    if f and r and not (r == f or r.endswith("." + f) or f.endswith("." + r)):
        return 1, f"{f} -> {r}"
    return 0, ""


def check_for_missing_to_header(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    return (0, "") if view.exists("To") or view.exists("Apparently-To") else (1, "no To header")


def check_subject_all_caps(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    subject = (view.header("Subject") or "").strip()
    letters = [c for c in subject if c.isalpha()]
    if len(letters) >= 10 and all(c.isupper() for c in letters) and len(subject.split()) >= 3:
        return 1, subject[:100]
    return 0, ""


def check_header_count_range(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    """check_header_count_range('Name', min, max): the header occurs min..max times."""
    if len(args) != 3:
        return 0, ""
    count = sum(1 for n, _ in view.headers if n.lower() == args[0].lower())
    try:
        low, high = int(args[1]), int(args[2])
    except ValueError:
        return 0, ""
    return (1, f"{args[0]} x{count}") if low <= count <= high else (0, "")


def check_link_text_mismatch(view: MessageView, args: tuple[str, ...]) -> tuple[int, str]:
    """An HTML link whose visible text is a URL of another domain than the link's target (phishing)."""
    for raw in view.html_links:
        href, text = raw
        m = re.match(r"(?:https?://)?(?:www\.)?([a-z0-9.-]+\.[a-z]{2,})\b", text.strip(), re.IGNORECASE)
        h = re.match(r"https?://(?:[^@/]*@)?([^/:?#]+)", href.strip(), re.IGNORECASE)
        if not m or not h:
            continue
        shown, target = m.group(1).lower(), h.group(1).lower().removeprefix("www.")
        if not (target == shown or target.endswith("." + shown) or shown.endswith("." + target)):
            return 1, f"shows {shown}, goes to {target}"
    return 0, ""


EVALS: dict[str, EvalFn] = {
    "check_date_invalid": check_date_invalid,
    "check_replyto_other_domain": check_replyto_other_domain,
    "check_for_missing_to_header": check_for_missing_to_header,
    "check_subject_all_caps": check_subject_all_caps,
    "check_header_count_range": check_header_count_range,
    "check_link_text_mismatch": check_link_text_mismatch,
    **mimestructure.EVALS,
    **htmltricks.EVALS,
    **uris.EVALS,
    **language.EVALS,
    **headerchecks.EVALS,
    **ratware.EVALS,
}
