"""SMTP transactions per second that one ingress process accepts, with greylisting on (real Redis).

The server runs in a process of its own (IngressHandler + aiosmtpd, the production code path) with a
publisher that acknowledges at once: this measures the SMTP dialogue and the pre-queue policy, not Kafka
(see bench/e2e_latency.py for the whole pipeline). Clients are internet clients (127.0.0.2-127.0.0.9,
not trusted), one transaction per connection. Greylisting: every triplet is greylisted once in a warm-up
(delay 0 here), so the measured transactions take the whitelisted path: a Redis MGET + SET per recipient.

    .venv/bin/python bench/ingress_smtp_load.py --seconds 10 --concurrency 20

`--all-checks` adds every DNS/LDAP check against local servers (NSD and slapd from the devstack): DNSBL at
connection time (two lists, answers cached in Redis), reverse DNS (PTR must exist), HELO checks, unknown
sender domain, SPF at MAIL FROM (pyspf in a worker thread, a TXT lookup per transaction: pyspf has no cache
across checks), recipient verification against an LDAP directory served from its Redis-synced cache, plus
greylisting of a welcomelisted (already passed) triplet. `--runs 3` prints each run and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib

from mailgw_devstack.dnsserver import LocalDns
from mailgw_devstack.infra import free_port, start_redis, wait_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_ingress.dnsbl import ConnectionDnsbl
from mailgw_ingress.greylist import GreylistPolicy
from mailgw_ingress.hostchecks import HostChecks
from mailgw_ingress.recipients import DirectoryRecipients, RecipientVerifier
from mailgw_ingress.relay import RelayPolicy
from mailgw_ingress.smtp import IngressHandler, start_smtp_server
from mailgw_ingress.spfcheck import SpfChecker
from mailgw_libs.directory import Directory, DirectoryProfile
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.events import MailReceived, SmtpEvent
from mailgw_libs.failfast import make_redis
from mailgw_libs.resolver import make_resolver

MESSAGE = b"Subject: load\r\nFrom: a@sender.test\r\n\r\n" + b"x" * 2000 + b"\r\n"
SENDERS = 50


@dataclass(frozen=True)
class Checks:
    """Where the DNS and LDAP servers of `--all-checks` are (None: greylisting only)."""

    dns_port: int
    ldap_url: str
    ldap_admin: str
    ldap_password: str
    ldap_base: str


def serve(port: int, redis_url: str, greylisting: bool, checks: Checks | None = None) -> None:
    async def main() -> None:
        async def publish(_event: MailReceived, _raw: bytes) -> None:
            return None

        def on_event(_event: SmtpEvent) -> None:
            return None

        redis = make_redis(redis_url, 0.5)
        greylist = GreylistPolicy(redis, "bench:", delay_s=0.0) if greylisting else None
        extra: dict[str, Any] = {}
        if checks is not None:
            resolver = make_resolver(["127.0.0.1"], checks.dns_port, 2.0)
            lists = [DnsList("bl1.bench.test", 2.0), DnsList("bl2.bench.test", 1.0)]
            extra["dnsbl"] = ConnectionDnsbl(DnsListChecker(resolver, redis, 300, 2.0, prefix="bench:dnsl:"),
                                             lists, threshold=2.0)
            extra["hostchecks"] = HostChecks(resolver, own_names=["mx.bench"], own_ips=["127.0.0.1"],
                                             helo_checks=True, helo_require_fqdn=True,
                                             reject_unknown_sender_domain=True, rdns="ptr")
            extra["spf"] = SpfChecker(["127.0.0.1"], checks.dns_port, 2.0, "mx.bench")
            directory = Directory(DirectoryProfile(name="bench", uri=checks.ldap_url, base_dn=checks.ldap_base,
                                                   bind_dn=checks.ldap_admin, password=checks.ldap_password),
                                  redis, prefix="bench:dir:")
            await directory.sync()
            extra["recipients"] = RecipientVerifier([DirectoryRecipients([directory])])
        handler = IngressHandler(RelayPolicy(["example.com"], ["127.0.0.1/32"]), publish, on_event, "mx.bench",
                                 max_recipients=100, max_message_bytes=10 * 1024 * 1024, greylist=greylist,
                                 max_connections_per_ip=1000, **extra)
        await start_smtp_server(handler, "127.0.0.1", port, 10 * 1024 * 1024, 65536, 60)
        await asyncio.Event().wait()

    asyncio.run(main())


async def transaction(port: int, n: int) -> bool:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(f"127.0.0.{2 + n % 8}", 0),
                           start_tls=False, local_hostname="load.sender.test", timeout=30)
    await smtp.connect()
    try:
        await smtp.ehlo()
        refused, _ = await smtp.sendmail(f"s{n % SENDERS}@sender.test", ["user@example.com"], MESSAGE)
        return refused == {}
    except aiosmtplib.SMTPException:
        return False
    finally:
        await smtp.quit()


async def load(port: int, seconds: float, concurrency: int) -> float:
    # Warm-up: each triplet (8 client /24s are one /24 here) is greylisted once, then whitelisted.
    for n in range(SENDERS):
        await transaction(port, n)
    done = failed = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done, failed
        n = w
        while time.monotonic() < deadline:
            if await transaction(port, n):
                done += 1
            else:
                failed += 1
            n += concurrency

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - started
    print(f"{done} transactions accepted in {elapsed:.1f}s = {done / elapsed:.0f}/s "
          f"({failed} not accepted), concurrency {concurrency}")
    return done / elapsed


def start_check_servers(state: Path) -> tuple[LocalDns, LocalLdap, Checks]:
    dns = LocalDns(state)
    # Clients 127.0.0.2-9: listed in bl2 only (weight 1 < threshold 2), so every lookup is a real answer.
    dns.set_zone("bl1.bench.test", ["@ IN A 127.0.0.1"])
    dns.set_zone("bl2.bench.test", [f"{i}.0.0.127 IN A 127.0.0.2" for i in range(2, 10)])
    dns.set_zone("0.0.127.in-addr.arpa", [f"{i} IN PTR host{i}.sender.test." for i in range(2, 10)])
    dns.set_zone("sender.test", ["@ IN MX 10 mx", "mx IN A 127.0.0.9", '@ IN TXT "v=spf1 ip4:127.0.0.0/24 -all"',
                                 *(f"host{i} IN A 127.0.0.{i}" for i in range(2, 10)), "load IN A 127.0.0.2"])
    dns.apply()
    ldap = LocalLdap(state)
    ldap.start()
    ldap.add(f"""dn: uid=user,ou=people,{ldap.base_dn}
objectClass: inetOrgPerson
uid: user
cn: User
sn: U
mail: user@example.com
""")
    return dns, ldap, Checks(dns.port, ldap.url, ldap.admin_dn, ldap.password, ldap.base_dn)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--no-greylisting", action="store_true")
    parser.add_argument("--all-checks", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="smtp-load-"))
    redis = start_redis(state)
    dns = ldap = None
    checks = None
    if args.all_checks:
        dns, ldap, checks = start_check_servers(state)
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port, f"redis://127.0.0.1:{redis.port}/0",
                                                         not args.no_greylisting, checks), daemon=True)
    server.start()
    try:
        wait_port(port, 15)
        rates = [asyncio.run(load(port, args.seconds, args.concurrency)) for _ in range(args.runs)]
        if args.runs > 1:
            print(f"median of {args.runs} runs: {statistics.median(rates):.0f} transactions/s")
    finally:
        server.terminate()
        server.join(5)
        for managed in (dns, ldap, redis):
            if managed is not None:
                managed.stop()


if __name__ == "__main__":
    main()
