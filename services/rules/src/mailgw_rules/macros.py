"""Macros in action texts (`__SENDER__`, `__SPAM_INFO__` ...), replaced in one pass.

One pass over the template: a value that itself contains `__SUBJECT__` (a hostile subject) is not
expanded again. Values for header fields are flattened to one line so nothing can inject fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgw_libs.events import SymbolHit

_MACRO = re.compile(r"__([A-Z_]{2,20}?)__")
MAX_EXPANSION = 16 * 1024
MAX_LIST = 50  # recipients / symbols listed in a macro


@dataclass(frozen=True)
class MacroContext:
    sender: str
    recipients: list[str]
    recipient: str
    admin: str
    subject: str
    message_id: str
    rule: str
    score: float
    symbols: list[SymbolHit]
    viruses: list[str]
    filenames: list[str]
    client_ip: str

    def value(self, name: str) -> str | None:
        """The value of one macro (computed on demand: most templates use two or three), None if unknown."""
        match name:
            case "SENDER":
                return self.sender or "<>"
            case "RECEIVERS":
                more = f" (+{len(self.recipients) - MAX_LIST} more)" if len(self.recipients) > MAX_LIST else ""
                return ", ".join(self.recipients[:MAX_LIST]) + more
            case "RECIPIENT" | "TARGETS":
                return self.recipient
            case "ADMIN":
                return self.admin
            case "SUBJECT":
                return self.subject
            case "MSGID":
                return self.message_id
            case "RULE" | "RULE_INFO":
                return self.rule
            case "SPAMLEVEL":
                return f"{self.score:.2f}"
            case "SPAMSTARS":
                return "*" * max(0, min(int(self.score), 50))
            case "SPAM_INFO":
                symbols = ", ".join(f"{h.name} {h.score:.2f}" for h in self.symbols[:MAX_LIST])
                return f"Spam detection results: {self.score:.2f}" + (f" ({symbols})" if symbols else "")
            case "VIRUS_INFO":
                return ", ".join(self.viruses[:MAX_LIST]) or "none"
            case "FILENAME":
                return ", ".join(self.filenames[:MAX_LIST])
            case "SENDER_IP":
                return self.client_ip
        return None


def per_recipient(template: str) -> bool:
    """Whether the expansion differs between recipients of one message (otherwise it can be shared)."""
    return "__RECIPIENT__" in template or "__TARGETS__" in template


def expand(template: str, context: MacroContext, one_line: bool = False) -> str:
    if "__" not in template:
        text = template
    else:
        def replace(match: re.Match[str]) -> str:
            value = context.value(match.group(1))
            return match.group(0) if value is None else value

        text = _MACRO.sub(replace, template)
    if one_line:
        text = " ".join(text.split())
    return text[:MAX_EXPANSION]
