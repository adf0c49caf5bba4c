"""The LDAP directories recipient verification asks, kept across configuration changes.

A directory is a `mailgw_libs.directory.Directory` (answers cached in Redis, filled by a periodic sync; profiles
from the configuration are read by `mailgw_libs.directory.profile_from_config`, with their failover servers,
StartTLS and certificate checking). The pool keeps one per profile and its sync loop; `apply` is given the
profiles the new policy needs and rebuilds only those whose settings changed, so a configuration change
elsewhere (a relay domain, a DNSBL) does not drop the cache warm-up of a directory or start a second sync loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from mailgw_libs.directory import Directory, DirectoryProfile


@dataclass(frozen=True)
class DirectorySpec:
    """What a directory is built from; two equal specs give the same directory (so it is kept)."""

    profile: DirectoryProfile
    sync_interval_s: float


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
            directory = Directory(spec.profile, self.redis, prefix=self.prefix, cache_ttl_s=self.cache_ttl_s)
            self.specs[name] = spec
            self.directories[name] = directory
            self.tasks[name] = asyncio.create_task(directory.run_sync_loop(spec.sync_interval_s),
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
