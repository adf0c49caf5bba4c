"""The configuration's LDAP profiles as the rule engine's `Directory`: ldap_user / ldap_group who objects.

Each profile a rule names gets a `mailgw_libs.directory.Directory` (answers cached in Redis, a full sync every
`sync_interval_s`, so rules keep working from the cache while the directory is down), built from the configured
profile by the library with its failover servers, StartTLS and certificate checking. `DirectoryManager`
rebuilds them when the profiles in the configuration change and leaves them (and their sync loops) alone when
only something else changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

import redis.asyncio as aioredis

from mailgw_libs.config.model import LdapProfile
from mailgw_libs.directory import Directory, DirectoryMisconfigured, DirectoryUnavailable, directory_from_config

log = logging.getLogger("mailgw.rules.directories")

DEFAULT_PREFIX = "mailgw:rules:directory:"


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
                directories[name] = directory_from_config(name, config, self.redis, prefix=self.prefix,
                                                          cache_ttl_s=self.cache_ttl_s, environ=self.environ)
            except DirectoryMisconfigured as exc:
                problems[name] = str(exc)
                log.error("ldap profile not usable", extra={"profile": name, "error": problems[name]})
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
            task = asyncio.create_task(directory.run_sync_loop(wanted[name].sync_interval_s),
                                       name=f"ldap-sync-{name}")
            self.tasks.append(task)
        log.info("directories applied", extra={"profiles": sorted(wanted)})
        return self.current

    async def stop(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
