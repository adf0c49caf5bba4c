"""The configuration's LDAP profiles as the rule engine's `Directory`: ldap_user / ldap_group who objects.

Each profile a rule names gets a `mailgw_libs.directory.Directory` (answers cached in Redis, a full sync every
`sync_interval_s`, so rules keep working from the cache while the directory is down). `DirectoryManager`
rebuilds them when the profiles in the configuration change and leaves them (and their sync loops) alone when
only something else changed.

The configuration's profile has more than `DirectoryProfile` carries (several servers, StartTLS, certificate
checking): `ProfileReader` connects with all of it, so a configured `starttls: true` or `verify_certificate`
is never silently dropped (the bind password would otherwise travel in clear or to an unverified server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import ssl
from collections.abc import Mapping

import ldap3
import redis.asyncio as aioredis
from ldap3.core.exceptions import LDAPException

from mailgw_libs.config.model import LdapProfile
from mailgw_libs.directory import Directory, DirectoryProfile, DirectoryUnavailable, LdapReader

log = logging.getLogger("mailgw.rules.directories")

DEFAULT_PREFIX = "mailgw:rules:directory:"


def group_filter(profile: LdapProfile) -> str:
    """Entries of any of the configured group object classes (groupOfNames when none is configured)."""
    classes = profile.group_classes or ["groupOfNames"]
    terms = "".join(f"(objectClass={c})" for c in classes)
    return f"(|{terms})" if len(classes) > 1 else terms


def directory_profile(name: str, profile: LdapProfile, environ: Mapping[str, str]) -> DirectoryProfile:
    """The library's profile of a configured one; the bind password comes from the environment variable the
    configuration names (secrets never travel in the document). KeyError when that variable is not set."""
    password = environ[profile.password_env] if profile.password_env else ""
    return DirectoryProfile(
        name=name, uri=profile.servers[0], base_dn=profile.base_dn, bind_dn=profile.bind_dn, password=password,
        user_filter=profile.user_filter, mail_attributes=tuple(profile.mail_attributes),
        group_base_dn=profile.group_base_dn, group_filter=group_filter(profile),
        # The library reads one member attribute: the first configured one.
        member_attribute=profile.group_member_attributes[0],
        timeout_s=profile.timeout_s)


class ProfileReader(LdapReader):
    """Connects to the first reachable server of the profile, with StartTLS and certificate checks as configured."""

    def __init__(self, profile: DirectoryProfile, config: LdapProfile) -> None:
        super().__init__(profile)
        self.config = config

    def _connect(self) -> ldap3.Connection:
        """A bound connection to the first server that answers, in configured order (ldap3's ServerPool is not
        used: it sleeps 10 s after a round of dead servers, which would stall every lookup during an outage)."""
        p, c = self.profile, self.config
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED if c.verify_certificate else ssl.CERT_NONE)
        auto_bind = ldap3.AUTO_BIND_TLS_BEFORE_BIND if c.starttls else ldap3.AUTO_BIND_NO_TLS
        failure: Exception | None = None
        for url in c.servers:
            server = ldap3.Server(url, connect_timeout=p.timeout_s, get_info=ldap3.NONE, tls=tls)
            try:
                # ldap3 packs the receive timeout as whole seconds (a float raises struct.error).
                return ldap3.Connection(server, user=p.bind_dn or None, password=p.password or None,
                                        auto_bind=auto_bind, receive_timeout=max(1, math.ceil(p.timeout_s)),
                                        read_only=True, raise_exceptions=True)
            except (LDAPException, OSError) as exc:
                log.info("ldap server not usable, trying the next", extra={"server": url, "error": repr(exc)})
                failure = exc
        assert failure is not None  # the model requires at least one server
        raise failure


class ConfiguredDirectories:
    """The rule engine's `Directory` over the profiles of one configuration (immutable once built)."""

    def __init__(self, directories: Mapping[str, Directory], problems: Mapping[str, str] | None = None) -> None:
        self.directories = dict(directories)
        # Profiles that could not be built (e.g. the password variable is not set): every lookup fails, so a
        # decision that needs them waits (and is retried), never guessed as "not a member".
        self.problems = dict(problems or {})

    def _directory(self, profile: str) -> Directory:
        directory = self.directories.get(profile)
        if directory is None:
            raise DirectoryUnavailable(self.problems.get(profile, f"no LDAP profile {profile!r}"))
        return directory

    async def user_exists(self, address: str, profile: str) -> bool:
        return await self._directory(profile).user_exists(address)

    async def is_member(self, address: str, group: str, profile: str) -> bool:
        return await self._directory(profile).is_member(address, group)


class DirectoryManager:
    """Owns the directories of the profiles in use and their sync loops; `apply` swaps them on a change."""

    def __init__(self, redis: aioredis.Redis, prefix: str = DEFAULT_PREFIX, cache_ttl_s: float = 600.0,
                 environ: Mapping[str, str] | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cache_ttl_s = cache_ttl_s
        self.environ = environ if environ is not None else os.environ
        self.profiles: dict[str, LdapProfile] = {}
        self.current = ConfiguredDirectories({})
        self.tasks: list[asyncio.Task[None]] = []

    def build(self, profiles: Mapping[str, LdapProfile]) -> ConfiguredDirectories:
        directories: dict[str, Directory] = {}
        problems: dict[str, str] = {}
        for name, config in profiles.items():
            try:
                profile = directory_profile(name, config, self.environ)
            except KeyError:
                problems[name] = (f"LDAP profile {name!r}: environment variable {config.password_env} "
                                  f"(password_env) is not set")
                log.error("ldap profile not usable", extra={"profile": name, "error": problems[name]})
                continue
            directories[name] = Directory(profile, self.redis, prefix=self.prefix, cache_ttl_s=self.cache_ttl_s,
                                          reader=ProfileReader(profile, config))
        return ConfiguredDirectories(directories, problems)

    async def apply(self, profiles: Mapping[str, LdapProfile]) -> ConfiguredDirectories:
        """The directories of `profiles` (those the rules use); unchanged profiles keep theirs and their loops."""
        wanted = dict(profiles)
        if wanted == self.profiles:
            return self.current
        await self.stop()
        self.current = self.build(wanted)
        self.profiles = wanted
        for name, directory in self.current.directories.items():
            task = asyncio.create_task(self._sync_loop(directory, wanted[name].sync_interval_s),
                                       name=f"ldap-sync-{name}")
            self.tasks.append(task)
        log.info("directories applied", extra={"profiles": sorted(wanted)})
        return self.current

    @staticmethod
    async def _sync_loop(directory: Directory, interval_s: float) -> None:
        """Sync now and every `interval_s`. Unlike the library's loop, a Redis failure does not end it either:
        the loop lives as long as the configuration, and a failed round is retried sooner."""
        while True:
            try:
                count = await directory.sync()
                log.info("directory synced", extra={"profile": directory.profile.name, "addresses": count})
                await asyncio.sleep(interval_s)
            except Exception as exc:  # noqa: BLE001 - LDAP or Redis down: answers keep coming from the cache
                log.warning("directory sync failed", extra={"profile": directory.profile.name, "error": repr(exc)})
                await asyncio.sleep(min(interval_s, 30.0))

    async def stop(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
