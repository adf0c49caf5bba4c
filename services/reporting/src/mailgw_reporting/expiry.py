"""The periodic task that deletes quarantined messages past their lifetime.

The quarantine table's TTL drops such rows too, but only when ClickHouse merges parts, which may
be much later; queries hide them meanwhile. This task deletes them (metadata and raw bytes) at the
store's clock, so an expired message is really gone within one interval.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from .store import ReportStore, StoreUnavailable

log = logging.getLogger("mailgw.reporting.expiry")

EXPIRED = Counter("mailgw_reporting_quarantine_expired_total", "Quarantine rows deleted after their lifetime")


async def expire_once(store: ReportStore) -> int:
    """One expiry run; 0 (and a warning) when the store is unavailable: the next run catches up."""
    try:
        count = await store.expire_quarantine()
    except StoreUnavailable as exc:
        log.warning("quarantine expiry skipped: store unavailable", extra={"error": str(exc)})
        return 0
    if count:
        EXPIRED.inc(count)
        log.info("expired quarantined messages", extra={"rows": count})
    return count


async def run_expiry(store: ReportStore, interval_s: float, rounds: int | None = None) -> list[int]:
    """Expire every `interval_s` (first run at once); forever, or `rounds` times (tests: the counts)."""
    counts: list[int] = []
    done = 0
    while rounds is None or done < rounds:
        count = await expire_once(store)
        done += 1
        if rounds is not None:
            counts.append(count)
            if done >= rounds:
                break
        await asyncio.sleep(interval_s)
    return counts
