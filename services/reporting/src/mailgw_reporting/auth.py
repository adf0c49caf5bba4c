"""Authentication of the reporting API: HTTP Basic against the configuration's `admins` (name, role, hash).

- Hashes are verified by passlib (the maintained `libpass` release): `$argon2id$` (argon2-cffi), `$2b$`
  (bcrypt), `$6$` (`openssl passwd -6`), `$pbkdf2-sha256$`, `$scrypt$`, the formats the model accepts.
  Verifying costs up to a second of CPU by design, so it runs in a worker thread, at most
  `MAX_CONCURRENT_VERIFICATIONS` at a time (a flood of wrong passwords cannot take every core), and a success
  is remembered for `REMEMBER_S` (keyed by an HMAC under a key of this process, never the password itself)
  so that a client sending the same credentials again is not charged again.
- Roles (PMG's): `root` and `admin` may do everything; `qmanager` and `helpdesk` read everything and act on
  quarantined mail (`/api/v1/quarantine/...`); `audit` only reads. A disabled account is refused.
- With no account configured the API stays open as before, but only to loopback clients (a warning is
  logged when such a configuration comes into force); other clients get 403.
- The quarantine links of the spam report (`/quarantine/link/...`) are not behind this: they are signed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from passlib.context import CryptContext
from passlib.exc import UnknownHashError
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailgw_libs.config.model import AdminUser

log = logging.getLogger("mailgw.reporting.auth")

HASHES = CryptContext(schemes=["argon2", "bcrypt", "sha512_crypt", "pbkdf2_sha256", "scrypt"])
# Verified against for unknown names, so that a wrong name costs as much as a wrong password.
_DUMMY_HASH = "$pbkdf2-sha256$29000$AAAAAAAAAAAAAAAAAAAAAA$0000000000000000000000000000000000000000000"
MAX_AUTHORIZATION = 4096
MAX_CONCURRENT_VERIFICATIONS = 2
REMEMBER_S = 300.0
REMEMBERED_MAX = 1024
READ_METHODS = frozenset({"GET", "HEAD"})
QUARANTINE_PREFIX = "/api/v1/quarantine/"

AUTH = Counter("mailgw_reporting_api_auth_total", "API authentication results", ["result"])

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str


def allowed(role: str, method: str, path: str) -> bool:
    if role in ("root", "admin"):
        return True
    if method in READ_METHODS:
        return role in ("audit", "qmanager", "helpdesk")
    return role in ("qmanager", "helpdesk") and path.startswith(QUARANTINE_PREFIX)


def credentials(header: str) -> tuple[str, str] | None:
    """(name, password) of a Basic Authorization header, None when it is anything else or malformed."""
    if not header or len(header) > MAX_AUTHORIZATION:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or not name or not password or not decoded.isprintable():
        return None
    return name, password


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _verify(password: str, password_hash: str) -> bool:
    try:
        return bool(HASHES.verify(password, password_hash))
    except (UnknownHashError, ValueError, TypeError):
        # A hash the model let through that passlib cannot read (e.g. a truncated one): never a match.
        return False


class Authenticator:
    """The accounts in force; `use` replaces them at once (a configuration change)."""

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        self._accounts = {a.name: a for a in accounts}
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, float] = OrderedDict()
        self._verifying = asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)

    @staticmethod
    def accounts_of(admins: Sequence[AdminUser]) -> list[Account]:
        return [Account(a.name, a.role, a.password_hash) for a in admins if a.enabled]

    @property
    def open(self) -> bool:
        return not self._accounts

    def use(self, accounts: Iterable[Account]) -> None:
        self._accounts = {a.name: a for a in accounts}
        self._remembered.clear()  # a changed or removed password must not stay valid
        if self.open:
            log.warning("no administrator configured (admins): the API is open to loopback clients only")

    async def account(self, name: str, password: str) -> Account | None:
        account = self._accounts.get(name)
        stored = account.password_hash if account else _DUMMY_HASH
        token = hmac.new(self._key, "\0".join((name, password, stored)).encode(), hashlib.sha256).digest()
        now = time.monotonic()
        if account is not None and self._remembered.get(token, 0.0) > now:
            return account
        async with self._verifying:
            ok = await asyncio.to_thread(_verify, password, stored)
        if not ok or account is None or self._accounts.get(name) is not account:
            return None
        self._remembered[token] = now + REMEMBER_S
        self._remembered.move_to_end(token)
        while len(self._remembered) > REMEMBERED_MAX:
            self._remembered.popitem(last=False)
        return account

    async def check(self, request: Request) -> Response | None:
        """None when the request may go on, else the refusal."""
        if self.open:
            if is_loopback(request.client.host if request.client else None):
                return None
            AUTH.labels("refused_remote").inc()
            return JSONResponse({"error": "forbidden", "detail": "no administrator configured: loopback only"},
                                status_code=403)
        given = credentials(request.headers.get("authorization", ""))
        account = await self.account(*given) if given else None
        if account is None:
            AUTH.labels("failed").inc()
            return JSONResponse({"error": "unauthorized", "detail": "valid credentials required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="mailgw", charset="UTF-8"'})
        if not allowed(account.role, request.method, request.url.path):
            AUTH.labels("forbidden").inc()
            return JSONResponse({"error": "forbidden", "detail": f"role {account.role} may not do this"},
                                status_code=403)
        AUTH.labels("ok").inc()
        return None

    def protect(self, endpoint: Endpoint) -> Endpoint:
        async def protected(request: Request) -> Response:
            refusal = await self.check(request)
            return refusal if refusal is not None else await endpoint(request)

        return protected

    def protect_routes(self, routes: Iterable[BaseRoute]) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for route in routes:
            if isinstance(route, Route):
                out.append(Route(route.path, self.protect(route.endpoint), methods=list(route.methods or ()),
                                 name=route.name))
            else:
                out.append(route)
        return out
