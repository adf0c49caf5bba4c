"""Language and charset checks (`eval:` tests).

Language: py3langid with its bundled model (offline). The `ok_languages` setting lists the languages
the site reads (ISO 639-1); "all" (the default) turns the check off. The model loads once per process,
on the first message that needs it (1.5 s), never when every language is accepted.

Charsets: a text part that declares a charset Python does not know, declares US-ASCII (or nothing) but
carries 8-bit bytes, declares UTF-8 but is not valid UTF-8, or declares a Latin single-byte charset but
is in fact UTF-8; encoded header words in a charset that does not exist.
"""

from __future__ import annotations

import codecs
import re
import threading
from functools import lru_cache
from typing import Any

from .message import MessageView

EvalResult = tuple[int, str]

MIN_LETTERS = 80           # shorter texts are not classified (too little evidence)
MIN_CONFIDENCE = 0.9
DETECT_CHARS = 4000
_LATIN_SINGLE_BYTE = ("iso-8859-1", "iso-8859-15", "windows-1252", "latin1", "latin-1", "cp1252")
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}")
_HIGH = re.compile(rb"[\x80-\xff]")
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier() -> Any:
    with _lock:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, probability), or None when the text has too few letters to tell."""
    sample = text[:DETECT_CHARS]
    if sum(1 for c in sample if c.isalpha()) < MIN_LETTERS:
        return None
    lang, prob = _identifier().classify(sample)
    return str(lang), float(prob)


def message_language(view: MessageView) -> tuple[str, float] | None:
    if "language" not in view.memo:
        subject = 1 if (view.header("Subject") or "").strip() else 0
        text = " ".join(p.decode("utf-8", "replace") for p in view.body[subject:subject + 50])
        view.memo["language"] = detect_language(text)
    result: tuple[str, float] | None = view.memo["language"]
    return result


def check_language_not_ok(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """The body is (confidently) in a language outside the `ok_languages` setting."""
    ok = {lang.lower() for lang in view.ok_languages}
    if not ok or "all" in ok:
        return 0, ""
    found = message_language(view)
    if found is None or found[1] < MIN_CONFIDENCE or found[0] in ok:
        return 0, ""
    return 1, f"written in {found[0]} ({found[1]:.2f})"


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


def check_charset_unknown(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    for node in view.nodes:
        if node.charset and not _known(node.charset):
            return 1, node.charset
    return 0, ""


def check_charset_8bit_undeclared(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """check_charset_8bit_undeclared(min_bytes, min_ratio): a text part that declares US-ASCII or no charset
    holds at least `min_bytes` 8-bit bytes making at least `min_ratio` of it. A few stray accents are a
    careless mailer; text written mostly in 8-bit with no charset cannot be displayed as written."""
    minimum = int(args[0]) if args else 3
    ratio = float(args[1]) if len(args) > 1 else 0.0
    for part in view.text_parts:
        if part.charset not in ("", "us-ascii", "ascii"):
            continue
        sample = part.payload[:100_000]
        high = len(_HIGH.findall(sample))
        if high >= minimum and high >= ratio * len(sample):
            return 1, f"{high} 8-bit bytes declared {part.charset or 'without charset'}"
    return 0, ""


def check_charset_bad_utf8(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    for part in view.text_parts:
        if part.charset in ("utf-8", "utf8"):
            try:
                part.payload[:200_000].decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.start < len(part.payload[:200_000]) - 4:  # not just a cut at our bound
                    return 1, "declared UTF-8, is not"
    return 0, ""


def check_charset_latin_is_utf8(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    """Declared a Latin single-byte charset, but the bytes are UTF-8 (mojibake for the reader)."""
    for part in view.text_parts:
        if part.charset not in _LATIN_SINGLE_BYTE:
            continue
        data = part.payload[:100_000]
        if len(_UTF8_MULTIBYTE.findall(data)) >= 3:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            return 1, f"declared {part.charset}, is UTF-8"
    return 0, ""


def check_encoded_word_unknown_charset(view: MessageView, args: tuple[str, ...]) -> EvalResult:
    for name in ("Subject", "From", "To"):
        value = view.header(name, "raw") or ""
        for charset in re.findall(r"=\?([^?*]{1,40})(?:\*[^?]*)?\?[bqBQ]\?", value):
            if not _known(charset):
                return 1, f"{name}: {charset}"
    return 0, ""


EVALS = {
    "check_language_not_ok": check_language_not_ok,
    "check_charset_unknown": check_charset_unknown,
    "check_charset_8bit_undeclared": check_charset_8bit_undeclared,
    "check_charset_bad_utf8": check_charset_bad_utf8,
    "check_charset_latin_is_utf8": check_charset_latin_is_utf8,
    "check_encoded_word_unknown_charset": check_encoded_word_unknown_charset,
}
