"""A real authoritative DNS server (NSD) on a loopback port, with zones the tests write.

DNSBL/URIBL/DNSWL lists, SPF/DKIM/DMARC records, MX and PTR records are served by NSD over
UDP and TCP exactly like on the Internet, so the code under test uses its real resolver.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .infra import Managed, StartError, free_port, spawn

if TYPE_CHECKING:
    import dns.asyncresolver

TXT_CHUNK = 255


def txt(value: str) -> str:
    """A TXT record's data: long values (DKIM keys) split into quoted strings of at most 255 characters."""
    chunks = [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class LocalDns:
    """NSD serving `zones` (name -> zone-file record lines, relative to the zone or absolute) on 127.0.0.1:port."""

    def __init__(self, state: Path, port: int | None = None) -> None:
        self.dir = state / "nsd"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.zones: dict[str, list[str]] = {}
        self.managed: Managed | None = None

    def resolver(self, timeout: float = 3.0) -> dns.asyncresolver.Resolver:
        """An asyncio resolver that asks this server only (built as the services build theirs), without the
        in-process answer cache, so a test sees its zone changes at once."""
        from mailgw_libs.resolver import make_resolver

        resolver = make_resolver([self.host], self.port, timeout)
        resolver.cache = None
        return resolver

    def set_zone(self, name: str, records: Iterable[str]) -> None:
        """Add or replace one zone; takes effect at `apply()`."""
        self.zones[name.rstrip(".").lower()] = list(records)

    def remove_zone(self, name: str) -> None:
        self.zones.pop(name.rstrip(".").lower(), None)

    def apply(self) -> None:
        """(Re)start NSD with the current zones on the same port."""
        self.stop()
        conf = self._write()
        log = self.dir / "nsd.out"
        proc = spawn("nsd", ["nsd", "-d", "-c", str(conf)], log)
        self.managed = Managed("dns", self.port, log, proc=proc)
        self._wait_ready(proc, log)

    def stop(self) -> None:
        if self.managed is not None:
            self.managed.stop()
            self.managed = None

    def _write(self) -> Path:
        d = self.dir
        lines = [
            "server:",
            f"  ip-address: {self.host}@{self.port}",
            '  username: ""',
            '  chroot: ""',
            f"  zonesdir: {d}",
            f"  zonelistfile: {d}/zone.list",
            '  database: ""',
            f"  pidfile: {d}/nsd.pid",
            f"  xfrdfile: {d}/xfrd.state",
            f"  xfrdir: {d}",
            f"  logfile: {d}/nsd.log",
            "  server-count: 1",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for name, records in sorted(self.zones.items()):
            zonefile = d / f"{name}.zone"
            zonefile.write_text(_zone_text(name, records))
            lines += ["zone:", f"  name: {name}", f"  zonefile: {zonefile.name}"]
        conf = d / "nsd.conf"
        conf.write_text("\n".join(lines) + "\n")
        (d / "zone.list").unlink(missing_ok=True)
        return conf

    def _wait_ready(self, proc: object, log: Path, timeout: float = 15.0) -> None:
        import dns.exception
        import dns.message
        import dns.query

        probe = next(iter(sorted(self.zones)), ".")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.managed is not None
            if not self.managed.alive():
                raise StartError(f"nsd exited; see {log} and {self.dir / 'nsd.log'}")
            try:
                dns.query.udp(dns.message.make_query(probe, "SOA"), self.host, timeout=0.3, port=self.port)
                return
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        raise StartError(f"nsd did not answer on {self.host}:{self.port} within {timeout:.0f}s; see {log}")


def _zone_text(name: str, records: list[str]) -> str:
    head = [
        f"$ORIGIN {name}.",
        "$TTL 30",
        f"@ IN SOA ns.{name}. hostmaster.{name}. {int(time.time())} 3600 600 86400 30",
        f"@ IN NS ns.{name}.",
        "ns IN A 127.0.0.1",
    ]
    return "\n".join(head + records) + "\n"
