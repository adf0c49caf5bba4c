"""An LDAP directory for recipient verification and the rule system's LDAP who-objects.

Answers come from Redis: a periodic full sync (`sync()`, run by `run_sync_loop`) stores every address of the
directory with its canonical address and groups, and live lookups fill the gaps between syncs (a user added
since the last sync). While LDAP is down the last synced or cached answer is served, however old; without
any cached answer the lookup raises `DirectoryUnavailable` (the SMTP layer answers 451), never "unknown user".

LDAP access is ldap3 (pure Python, synchronous) run in a worker thread; `bonsai`, the asyncio LDAP client,
ships no wheel for this platform and would need libldap headers and a compiler.

A profile may name several servers (tried in order), StartTLS and certificate checking; `profile_from_config`
turns a configured `ldap_profiles` entry into a `DirectoryProfile` (the bind password read from the environment
variable it names) and `directory_from_config` builds the `Directory`, so every service reads LDAP the same way.

Redis keys under `<prefix><profile>:`: `gen` (current sync generation), `snap:<gen>` (hash address -> record),
`addr:<address>` (live lookup cache, TTL). A record is JSON {"canonical": str, "dn": str, "groups": [str]};
the live cache stores "null" for an address the directory does not know.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ldap3
import redis.asyncio as aioredis
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from mailgw_libs.config.model import LdapProfile

log = logging.getLogger("mailgw.directory")

_MAX_ADDRESS = 320  # RFC 5321 local part 64 + @ + domain 255
_PREFIXED = ("smtp:",)  # proxyAddresses values: "SMTP:primary@x" / "smtp:alias@x"


class DirectoryUnavailable(Exception):
    """LDAP could not be asked and no answer for this address is cached: the caller tempfails."""


class DirectoryMisconfigured(Exception):
    """A configured profile cannot be used as it is (its password variable is not set): callers treat every
    lookup of it as unavailable, never as "unknown user"."""


@dataclass(frozen=True)
class DirectoryProfile:
    """How to reach one directory and read addresses and groups out of it."""

    name: str
    uri: str  # the first server, ldap://host[:port] or ldaps://host[:port]
    base_dn: str
    bind_dn: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback
    # ANDed with the address match: which entries are mail users, e.g. "(objectClass=person)".
    user_filter: str = "(objectClass=*)"
    # Attributes holding addresses; the first value of the first attribute is the canonical address.
    mail_attributes: tuple[str, ...] = ("mail", "proxyAddresses")
    group_base_dn: str = ""
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
    member_attribute: str = "member"
    group_name_attribute: str = "cn"
    timeout_s: float = 5.0
    page_size: int = 500
    # Tried in order after `uri` when it does not answer (failover, PMG's server1/server2).
    fallback_uris: tuple[str, ...] = ()
    # StartTLS before the bind on ldap:// URLs; ldaps:// URLs are TLS from the start anyway.
    starttls: bool = False
    # Whether the server certificate must verify (against the system's CAs).
    verify_certificate: bool = True

    @property
    def servers(self) -> tuple[str, ...]:
        return (self.uri, *self.fallback_uris)


def group_filter_of(classes: Iterable[str]) -> str:
    """An LDAP filter for entries of any of the group object classes (groupOfNames when none is given)."""
    names = list(classes) or ["groupOfNames"]
    terms = "".join(f"(objectClass={escape_filter_chars(c)})" for c in names)
    return f"(|{terms})" if len(names) > 1 else terms


def profile_from_config(name: str, config: LdapProfile, environ: Mapping[str, str] | None = None) -> DirectoryProfile:
    """The directory profile of a configured `ldap_profiles` entry. The bind password comes from the environment
    variable the configuration names (secrets never travel in the configuration document); DirectoryMisconfigured
    when that variable is not set."""
    env = os.environ if environ is None else environ
    password = ""
    if config.password_env:
        if config.password_env not in env:
            raise DirectoryMisconfigured(
                f"LDAP profile {name!r}: environment variable {config.password_env} (password_env) is not set")
        password = env[config.password_env]
    return DirectoryProfile(
        name=name, uri=config.servers[0], fallback_uris=tuple(config.servers[1:]), base_dn=config.base_dn,
        bind_dn=config.bind_dn, password=password, user_filter=config.user_filter,
        mail_attributes=tuple(config.mail_attributes), group_base_dn=config.group_base_dn,
        group_filter=group_filter_of(config.group_classes),
        # The reader follows one member attribute: the first configured one.
        member_attribute=config.group_member_attributes[0], timeout_s=config.timeout_s,
        starttls=config.starttls, verify_certificate=config.verify_certificate)


@dataclass(frozen=True)
class DirectoryEntry:
    canonical: str
    dn: str
    groups: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps({"canonical": self.canonical, "dn": self.dn, "groups": list(self.groups)})

    @classmethod
    def from_json(cls, text: str | bytes) -> DirectoryEntry | None:
        data = json.loads(text)
        if data is None:
            return None
        return cls(str(data["canonical"]), str(data["dn"]), tuple(str(g) for g in data.get("groups", [])))


def normalise_address(address: str) -> str | None:
    """Lower-case `local@domain` without angle brackets, or None when it cannot be a mail address."""
    text = address.strip().strip("<>").strip()
    if not text or len(text) > _MAX_ADDRESS or "@" not in text:
        return None
    if any(ord(c) < 0x21 or c in "()<>,;\\\"[]" for c in text):
        return None
    local, _, domain = text.rpartition("@")
    if not local or not domain or "@" in local:
        return None
    return f"{local}@{domain.rstrip('.')}".lower()


def strip_prefix(value: str) -> str:
    lowered = value.lower()
    for prefix in _PREFIXED:
        if lowered.startswith(prefix):
            return value[len(prefix):]
    return value


class LdapReader:
    """The blocking LDAP side: one connection per call (calls are rare: syncs and cache misses)."""

    def __init__(self, profile: DirectoryProfile) -> None:
        self.profile = profile

    def _connect(self) -> ldap3.Connection:
        """A bound connection to the first server that answers, in the profile's order. ldap3's ServerPool is not
        used: it sleeps 10 s after a round of dead servers, which would stall every lookup during an outage.
        A StartTLS failure is a failure of that server: the bind never falls back to clear text."""
        p = self.profile
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if p.verify_certificate else ssl.CERT_NONE)
        auto_bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if p.starttls else ldap3.AUTO_BIND_NO_TLS
        failure: Exception | None = None
        for url in p.servers:
            try:
                server = ldap3.Server(url, connect_timeout=p.timeout_s, get_info=ldap3.NONE, tls=tls)
                # ldap3 packs the receive timeout as whole seconds (a float raises struct.error).
                return ldap3.Connection(server, user=p.bind_dn or None, password=p.password or None,
                                        auto_bind=auto_bind, receive_timeout=max(1, math.ceil(p.timeout_s)),
                                        read_only=True, raise_exceptions=True)
            except (LDAPException, OSError) as exc:
                log.info("ldap server not usable, trying the next", extra={"server": url, "error": repr(exc)})
                failure = exc
        assert failure is not None  # a profile always has `uri`
        raise failure

    def _address_filter(self, address: str) -> str:
        value = escape_filter_chars(address)
        terms = []
        for attr in self.profile.mail_attributes:
            terms.append(f"({attr}={value})")
            if attr.lower() == "proxyaddresses":
                terms.append(f"({attr}=smtp:{value})")
        return f"(&{self.profile.user_filter}(|{''.join(terms)}))"

    def _addresses(self, attributes: dict[str, Any]) -> list[str]:
        found: list[str] = []
        for attr in self.profile.mail_attributes:
            values = attributes.get(attr) or []
            for raw in values if isinstance(values, list) else [values]:
                address = normalise_address(strip_prefix(str(raw)))
                if address is not None and address not in found:
                    found.append(address)
        return found

    def lookup(self, address: str) -> DirectoryEntry | None:
        p = self.profile
        conn = self._connect()
        try:
            conn.search(p.base_dn, self._address_filter(address), attributes=list(p.mail_attributes), size_limit=2)
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            if not entries:
                return None
            entry = entries[0]
            addresses = self._addresses(entry["attributes"])
            groups = self._groups_of_dn(conn, entry["dn"])
            return DirectoryEntry(addresses[0] if addresses else address, entry["dn"], groups)
        finally:
            conn.unbind()

    def _groups_of_dn(self, conn: ldap3.Connection, dn: str) -> tuple[str, ...]:
        p = self.profile
        if not p.group_base_dn:
            return ()
        search = f"(&{p.group_filter}({p.member_attribute}={escape_filter_chars(dn)}))"
        conn.search(p.group_base_dn, search, attributes=[p.group_name_attribute])
        return tuple(sorted(self._group_names(e) for e in conn.response or [] if e.get("type") == "searchResEntry"))

    def _group_names(self, entry: dict[str, Any]) -> str:
        names = entry["attributes"].get(self.profile.group_name_attribute) or []
        name = names[0] if isinstance(names, list) and names else names
        return str(name or entry["dn"]).lower()

    def snapshot(self) -> dict[str, DirectoryEntry]:
        """Every address of the directory with its entry (paged searches)."""
        p = self.profile
        conn = self._connect()
        try:
            members: dict[str, list[str]] = {}
            if p.group_base_dn:
                for e in conn.extend.standard.paged_search(
                        p.group_base_dn, p.group_filter, attributes=[p.group_name_attribute, p.member_attribute],
                        paged_size=p.page_size, generator=True):
                    if e.get("type") != "searchResEntry":
                        continue
                    name = self._group_names(e)
                    for member in e["attributes"].get(p.member_attribute) or []:
                        members.setdefault(str(member).lower(), []).append(name)
            result: dict[str, DirectoryEntry] = {}
            for e in conn.extend.standard.paged_search(
                    p.base_dn, f"(&{p.user_filter}(|{''.join(f'({a}=*)' for a in p.mail_attributes)}))",
                    attributes=list(p.mail_attributes), paged_size=p.page_size, generator=True):
                if e.get("type") != "searchResEntry":
                    continue
                addresses = self._addresses(e["attributes"])
                if not addresses:
                    continue
                entry = DirectoryEntry(addresses[0], e["dn"], tuple(sorted(members.get(e["dn"].lower(), []))))
                for address in addresses:
                    result.setdefault(address, entry)
            return result
        finally:
            conn.unbind()


class Directory:
    """Cached directory answers for one profile (see the module docstring for the cache rules)."""

    def __init__(self, profile: DirectoryProfile, redis: aioredis.Redis, *, prefix: str = "mailgw:directory:",
                 cache_ttl_s: float = 600.0, reader: LdapReader | None = None) -> None:
        self.profile = profile
        self.redis = redis
        self.keys = f"{prefix}{profile.name}:"
        self.cache_ttl_s = max(1, int(cache_ttl_s))
        self.reader = reader or LdapReader(profile)
        self.last_sync: float | None = None  # monotonic time of the last successful sync of this process

    # --- answers ---------------------------------------------------------------------------------

    async def lookup(self, address: str) -> DirectoryEntry | None:
        """The entry of `address`, None when the directory does not know it. Raises DirectoryUnavailable."""
        key = normalise_address(address)
        if key is None:
            return None
        try:
            snapshot = await self._snapshot_get(key)
            if snapshot is not None:
                return snapshot
            cached = await self.redis.get(self.keys + "addr:" + key)
            if cached is not None:
                return DirectoryEntry.from_json(cached)
        except RedisError as exc:
            # No cache: LDAP itself still answers; the failure is only fatal when both are down.
            log.warning("directory cache unavailable", extra={"error": repr(exc)})
            return await self._ask_ldap_only(key)
        try:
            entry = await asyncio.to_thread(self.reader.lookup, key)
        except (LDAPException, OSError) as exc:
            return await self._answer_without_ldap(key, exc)
        try:
            await self.redis.set(self.keys + "addr:" + key, entry.to_json() if entry else "null", ex=self.cache_ttl_s)
        except RedisError as exc:
            # The answer is good; only its caching failed.
            log.warning("directory cache unavailable", extra={"error": repr(exc)})
        return entry

    async def _ask_ldap_only(self, key: str) -> DirectoryEntry | None:
        try:
            return await asyncio.to_thread(self.reader.lookup, key)
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"directory {self.profile.name}: LDAP and cache unreachable") from exc

    async def user_exists(self, address: str) -> bool:
        return await self.lookup(address) is not None

    async def canonical(self, address: str) -> str | None:
        entry = await self.lookup(address)
        return entry.canonical if entry else None

    async def groups_of(self, address: str) -> list[str]:
        entry = await self.lookup(address)
        return list(entry.groups) if entry else []

    async def is_member(self, address: str, group: str) -> bool:
        """`group` by name (cn) or by DN, case-insensitive."""
        wanted = group.strip().lower()
        groups = await self.groups_of(address)
        return wanted in groups or any(wanted.startswith(f"cn={g},") for g in groups)

    async def _snapshot_get(self, key: str) -> DirectoryEntry | None:
        gen = await self.redis.get(self.keys + "gen")
        if gen is None:
            return None
        value = await self.redis.hget(self.keys + "snap:" + _text(gen), key)
        return DirectoryEntry.from_json(value) if value is not None else None

    async def _answer_without_ldap(self, key: str, exc: Exception) -> DirectoryEntry | None:
        # A completed full sync lists every address the directory had: an address missing from it is
        # unknown as of that sync (what a directory cache such as PMG's answers too). No sync: no answer.
        log.warning("ldap unreachable", extra={"profile": self.profile.name, "error": repr(exc)})
        try:
            synced = await self.redis.get(self.keys + "gen") is not None
        except RedisError:
            synced = False
        if synced:
            return None
        raise DirectoryUnavailable(f"directory {self.profile.name} unreachable and {key} not cached") from exc

    # --- full sync -------------------------------------------------------------------------------

    async def sync(self) -> int:
        """Replace the snapshot with the directory's current content; returns the number of addresses.

        Raises LDAPException/OSError when LDAP is unreachable (the old snapshot stays in use)."""
        entries = await asyncio.to_thread(self.reader.snapshot)
        gen = f"{time.time_ns()}"
        snap = self.keys + "snap:" + gen
        pipe = self.redis.pipeline(transaction=False)
        for chunk in _chunks(list(entries.items()), 1000):
            pipe.hset(snap, mapping={address: entry.to_json() for address, entry in chunk})
        if not entries:
            pipe.hset(snap, "", "null")  # an empty directory is a valid snapshot
        await pipe.execute()
        old = await self.redis.getset(self.keys + "gen", gen)
        # Live lookups made before this sync are superseded by it.
        await self._delete_matching(self.keys + "addr:*")
        if old is not None:
            await self.redis.delete(self.keys + "snap:" + _text(old))
        self.last_sync = time.monotonic()
        return len(entries)

    async def _delete_matching(self, pattern: str) -> None:
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.redis.delete(*batch)
                batch = []
        if batch:
            await self.redis.delete(*batch)

    async def run_sync_loop(self, interval_s: float, *, retry_min_s: float = 5.0, retry_max_s: float = 60.0) -> None:
        """Sync now and every `interval_s`, until cancelled. A failed round (LDAP or Redis down, a directory
        that answers garbage) is logged and retried after a backoff that doubles from `retry_min_s` up to
        `retry_max_s` (and never beyond `interval_s`); answers keep coming from the cache meanwhile."""
        retry_s = retry_min_s
        while True:
            try:
                count = await self.sync()
            except Exception as exc:  # noqa: BLE001 - a failed round must not end the loop (cancelling still does)
                delay = min(retry_s, retry_max_s, interval_s)
                log.warning("directory sync failed", extra={"profile": self.profile.name, "error": repr(exc),
                                                            "retry_in_s": delay})
                retry_s = min(retry_s * 2, retry_max_s)
                await asyncio.sleep(delay)
                continue
            retry_s = retry_min_s
            log.info("directory synced", extra={"profile": self.profile.name, "addresses": count})
            await asyncio.sleep(interval_s)


def directory_from_config(name: str, config: LdapProfile, redis: aioredis.Redis, *,
                          prefix: str = "mailgw:directory:", cache_ttl_s: float = 600.0,
                          environ: Mapping[str, str] | None = None) -> Directory:
    """The `Directory` of a configured `ldap_profiles` entry (see `profile_from_config`; raises
    DirectoryMisconfigured when its password variable is not set)."""
    return Directory(profile_from_config(name, config, environ), redis, prefix=prefix, cache_ttl_s=cache_ttl_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
