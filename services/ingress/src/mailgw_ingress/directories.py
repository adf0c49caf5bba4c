"""The LDAP directories recipient verification asks, kept across configuration changes.

A directory is a `mailgw_libs.directory.Directory` (answers cached in Redis, filled by a periodic sync). The
pool keeps one per profile and its sync loop; `apply` is given the profiles the new policy needs and rebuilds
only those whose settings changed, so a configuration change elsewhere (a relay domain, a DNSBL) does not drop
the cache warm-up of a directory or start a second sync loop.

Profiles from the configuration (`ldap_profiles`) may name several servers, StartTLS and certificate checking:
`ConfiguredReader` connects with all of it, so a configured `starttls: true` is never silently dropped (the
bind password would otherwise travel in clear).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import ldap3
import redis.asyncio as aioredis
from ldap3.core.exceptions import LDAPException

from mailgw_libs.config.model import LdapProfile
from mailgw_libs.directory import Directory, DirectoryProfile, LdapReader

log = logging.getLogger("mailgw.ingress.directories")


def profile_of(name: str, config: LdapProfile, environ: Mapping[str, str]) -> DirectoryProfile:
    """The library's profile of a configured one. The bind password is read from the environment variable the
    configuration names (secrets never travel in the document); KeyError when it is not set."""
    classes = config.group_classes or ["groupOfNames"]
    terms = "".join(f"(objectClass={c})" for c in classes)
    return DirectoryProfile(
        name=name, uri=config.servers[0], base_dn=config.base_dn, bind_dn=config.bind_dn,
        password=environ[config.password_env] if config.password_env else "", user_filter=config.user_filter,
        mail_attributes=tuple(config.mail_attributes), group_base_dn=config.group_base_dn,
        group_filter=f"(|{terms})" if len(classes) > 1 else terms,
        member_attribute=config.group_member_attributes[0], timeout_s=config.timeout_s)


class ConfiguredReader(LdapReader):
    """Tries the profile's servers in order, with StartTLS and certificate checking as configured."""

    def __init__(self, profile: DirectoryProfile, config: LdapProfile) -> None:
        super().__init__(profile)
        self.config = config

    def _connect(self) -> ldap3.Connection:
        p, c = self.profile, self.config
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if c.verify_certificate else ssl.CERT_NONE)
        bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if c.starttls else ldap3.AUTO_BIND_NO_TLS
        last: Exception | None = None
        for url in c.servers:
            try:
                server = ldap3.Server(url, connect_timeout=p.timeout_s, get_info=ldap3.NONE, tls=tls)
                return ldap3.Connection(server, user=p.bind_dn or None, password=p.password or None, auto_bind=bind,
                                        receive_timeout=max(1, math.ceil(p.timeout_s)), read_only=True,
                                        raise_exceptions=True)
            except (LDAPException, OSError) as exc:
                log.info("ldap server not usable, trying the next", extra={"server": url, "error": repr(exc)})
                last = exc
        assert last is not None  # the model requires at least one server
        raise last


@dataclass(frozen=True)
class DirectorySpec:
    """What a directory is built from; two equal specs give the same directory (so it is kept)."""

    profile: DirectoryProfile
    sync_interval_s: float
    config: LdapProfile | None = None  # None: a profile from the environment (plain LDAP reader)


class DirectoryPool:
    def __init__(self, redis: aioredis.Redis, prefix: str, cache_ttl_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cache_ttl_s = cache_ttl_s
        self.specs: dict[str, DirectorySpec] = {}
        self.directories: dict[str, Directory] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def apply(self, wanted: Mapping[str, DirectorySpec]) -> dict[str, Directory]:
        """The directories of `wanted`; unchanged ones (and their sync loops) are kept, the others replaced."""
        for name in [n for n in self.specs if wanted.get(n) != self.specs[n]]:
            await self._drop(name)
        for name, spec in wanted.items():
            if name in self.specs:
                continue
            reader = ConfiguredReader(spec.profile, spec.config) if spec.config is not None else None
            directory = Directory(spec.profile, self.redis, prefix=self.prefix, cache_ttl_s=self.cache_ttl_s,
                                  reader=reader)
            self.specs[name] = spec
            self.directories[name] = directory
            self.tasks[name] = asyncio.create_task(self._sync_loop(directory, spec.sync_interval_s),
                                                   name=f"ldap-sync-{name}")
        return {name: self.directories[name] for name in wanted}

    async def _drop(self, name: str) -> None:
        self.specs.pop(name, None)
        self.directories.pop(name, None)
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        for name in list(self.specs):
            await self._drop(name)

    @staticmethod
    async def _sync_loop(directory: Directory, interval_s: float) -> None:
        """Sync now and every `interval_s`; any failure (LDAP or Redis down) is retried sooner, and the loop lives
        as long as the profile is in use (answers keep coming from the cache meanwhile)."""
        while True:
            try:
                count = await directory.sync()
                log.info("directory synced", extra={"profile": directory.profile.name, "addresses": count})
                await asyncio.sleep(interval_s)
            except Exception as exc:  # noqa: BLE001 - a failed round must not end the loop
                log.warning("directory sync failed", extra={"profile": directory.profile.name, "error": repr(exc)})
                await asyncio.sleep(min(interval_s, 30.0))
