"""Signed one-click links of the spam report (release, delete, welcomelist), like PMG's ticket links.

A link carries (message id, recipient) signed with HMAC-SHA1 by itsdangerous, keyed by the
`report_secret` setting and a salt per purpose: a release link does not verify as a delete link
(single purpose), and it is bound to one recipient and one message (changing either breaks the
signature). It carries its signing time and is refused after `ttl` (expiring). The time comes
from the injected clock, so expiry is testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from .store import Clock, system_clock

Purpose = Literal["release", "delete", "welcomelist"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
SALT_PREFIX = "mailgw.quarantine-link."
MAX_TOKEN = 2048


class LinkInvalid(ValueError):
    """Not a link we signed for this purpose (tampered, truncated, another purpose, another key)."""


class LinkExpired(LinkInvalid):
    """A genuine link, too old."""


@dataclass(frozen=True)
class Link:
    purpose: Purpose
    message_id: str
    recipient: str


class LinkSigner:
    def __init__(self, secret: str, ttl: timedelta, clock: Clock = system_clock) -> None:
        if len(secret) < 16:
            raise ValueError("the link secret must have at least 16 characters")
        self.ttl = ttl
        self.clock = clock

        class ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock().timestamp())

        self._serializers = {
            purpose: URLSafeTimedSerializer(secret, salt=SALT_PREFIX + purpose, signer=ClockSigner)
            for purpose in PURPOSES
        }

    def token(self, purpose: Purpose, message_id: str, recipient: str) -> str:
        return str(self._serializers[purpose].dumps([message_id, recipient.lower()]))

    def check(self, purpose: str, token: str) -> Link:
        """The link of a token; LinkExpired when too old, LinkInvalid for anything else that is wrong."""
        if purpose not in PURPOSES:
            raise LinkInvalid(f"unknown link purpose {purpose!r}")
        if not token or len(token) > MAX_TOKEN:
            raise LinkInvalid("malformed link")
        serializer = self._serializers[purpose]
        try:
            data: Any = serializer.loads(token, max_age=int(self.ttl.total_seconds()))
        except SignatureExpired as exc:
            raise LinkExpired("the link has expired") from exc
        except BadData as exc:
            raise LinkInvalid("the link is not valid") from exc
        if (not isinstance(data, list) or len(data) != 2
                or not all(isinstance(x, str) and 0 < len(x) <= 320 for x in data)):
            raise LinkInvalid("the link is not valid")
        return Link(purpose, data[0], data[1])
