"""The whole gateway on one machine: infrastructure, an SMTP sink, and every service as its own process."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .infra import Managed, StartError, free_port, port_in_use, spawn, start_clamd, start_redis, start_tansu, wait_port

SERVICES = ("ingress", "antispam", "antivirus", "ocr", "rules", "delivery", "reporting")


@dataclass
class StackPorts:
    smtp: int
    sink: int
    reporting: int
    health: dict[str, int]
    kafka: int | None = None
    redis: int | None = None
    clamd: int | None = None

    @classmethod
    def fixed(cls) -> StackPorts:
        """The documented local ports of `make run`."""
        health = {name: 9101 + i for i, name in enumerate(SERVICES)}
        health["reporting"] = 8025
        return cls(smtp=2525, sink=2526, reporting=8025, health=health)

    @classmethod
    def free(cls) -> StackPorts:
        """Random free ports, so tests never collide with a running `make run`."""
        health = {name: free_port() for name in SERVICES}
        return cls(smtp=free_port(), sink=free_port(), reporting=health["reporting"], health=health)


@dataclass
class Stack:
    state: Path
    ports: StackPorts
    relay_domains: list[str] = field(default_factory=lambda: ["example.com"])
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    infra: dict[str, Managed] = field(default_factory=dict)
    services: dict[str, Managed] = field(default_factory=dict)
    sink: Managed | None = None

    @property
    def delivered_dir(self) -> Path:
        return self.state / "delivered"

    def check_ports(self) -> None:
        wanted = {"SMTP ingress": self.ports.smtp, "SMTP sink": self.ports.sink}
        wanted |= {f"{n} HTTP": p for n, p in self.ports.health.items()}
        busy = [f"{what} 127.0.0.1:{port}" for what, port in wanted.items() if port_in_use(port)]
        if busy:
            raise StartError("ports already in use (is the gateway already running?): " + ", ".join(busy))

    @property
    def tls_dir(self) -> Path:
        return self.state / "tls"

    def start_infra(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self_signed_cert(self.tls_dir, "mailgw.localdomain")
        self.infra["kafka"] = start_tansu(self.state, self.ports.kafka)
        self.infra["redis"] = start_redis(self.state, self.ports.redis)
        self.infra["clamd"] = start_clamd(self.state, self.ports.clamd)

    def start_sink(self) -> None:
        # A complete Maildir (aiosmtpd's Mailbox only creates one when the folder does not exist).
        for sub in ("new", "cur", "tmp"):
            (self.delivered_dir / sub).mkdir(parents=True, exist_ok=True)
        log = self.state / "logs" / "sink.log"
        proc = spawn("sink", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.ports.sink}",
                              "-c", "aiosmtpd.handlers.Mailbox", str(self.delivered_dir)], log)
        wait_port(self.ports.sink, 15, proc, "SMTP sink")
        self.sink = Managed("sink", self.ports.sink, log, proc=proc)

    def env_for(self, name: str) -> dict[str, str]:
        up = name.upper()
        env = dict(os.environ)
        env.update({
            "PYTHONUNBUFFERED": "1",
            "OMP_THREAD_LIMIT": "1",
            "MAILGW_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.infra['kafka'].port}",
            "MAILGW_REDIS_URL": f"redis://127.0.0.1:{self.infra['redis'].port}/0",
            "MAILGW_CLICKHOUSE_URL": f"chdb://{self.state / 'clickhouse'}",
            f"MAILGW_{up}_HTTP_PORT": str(self.ports.health[name]),
        })
        specific = {
            "ingress": {
                "MAILGW_INGRESS_SMTP_PORT": str(self.ports.smtp),
                "MAILGW_INGRESS_RELAY_DOMAINS": json.dumps(self.relay_domains),
                "MAILGW_INGRESS_TRUSTED_NETWORKS": json.dumps(["127.0.0.1/32", "::1/128"]),
                # Local profile: a newcomer's first mail goes straight through (production default: on);
                # `MAILGW_INGRESS_GREYLISTING=true make run` turns it on. Environment only while mailgw.config
                # holds no version: a published configuration's ingress.greylisting.enabled wins (default on).
                "MAILGW_INGRESS_GREYLISTING": os.environ.get("MAILGW_INGRESS_GREYLISTING", "false"),
                "MAILGW_INGRESS_PREGREET_DELAY_S": os.environ.get("MAILGW_INGRESS_PREGREET_DELAY_S", "0"),
                "MAILGW_INGRESS_TLS_CERT_FILE": str(self.tls_dir / "cert.pem"),
                "MAILGW_INGRESS_TLS_KEY_FILE": str(self.tls_dir / "key.pem"),
            },
            "antivirus": {"MAILGW_ANTIVIRUS_CLAMD_HOST": "127.0.0.1",
                          "MAILGW_ANTIVIRUS_CLAMD_PORT": str(self.infra["clamd"].port)},
            "delivery": {"MAILGW_DELIVERY_RELAY_HOST": "127.0.0.1",
                         "MAILGW_DELIVERY_RELAY_PORT": str(self.ports.sink),
                         # Outbound mail (and DSNs) to the local sink too, never by MX to the Internet.
                         "MAILGW_DELIVERY_SMARTHOST": json.dumps({"host": "127.0.0.1", "port": self.ports.sink})},
            # Spam reports on (links signed with a secret of this state directory, pointing at the local API).
            "reporting": {"MAILGW_REPORTING_REPORT_BASE_URL": f"http://127.0.0.1:{self.ports.reporting}",
                          "MAILGW_REPORTING_REPORT_SECRET": os.environ.get("MAILGW_REPORTING_REPORT_SECRET")
                          or report_link_secret(self.state)},
        }
        env.update(specific.get(name, {}))
        env.update(self.extra_env.get(name, {}))
        return env

    def start_service(self, name: str) -> Managed:
        log = self.state / "logs" / f"{name}.log"
        proc = spawn(name, [sys.executable, "-m", f"mailgw_{name}"], log, env=self.env_for(name))
        managed = Managed(name, self.ports.health[name], log, proc=proc)
        self.services[name] = managed
        return managed

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            self.start_service(name)

    def wait_ready(self, names: tuple[str, ...] = SERVICES, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        last: dict[str, str] = {}
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                svc = self.services[name]
                if not svc.alive():
                    tail = svc.log.read_text(errors="replace")[-2000:] if svc.log.exists() else ""
                    raise StartError(f"service {name} exited; last log lines:\n{tail}")
                try:
                    r = httpx.get(f"http://127.0.0.1:{svc.port}/readyz", timeout=2.0)
                    if r.status_code == 200:
                        pending.discard(name)
                    else:
                        last[name] = r.text
                except httpx.HTTPError as exc:
                    last[name] = repr(exc)
            time.sleep(0.2)
        if pending:
            raise StartError("services not ready in time: " + "; ".join(f"{n}: {last.get(n, '')[:300]}" for n in pending))
        if "ingress" in names:
            wait_port(self.ports.smtp, 10, None, "SMTP ingress")

    def start(self) -> None:
        self.check_ports()
        self.start_infra()
        self.start_sink()
        self.start_services()
        self.wait_ready()

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()
        if self.sink:
            self.sink.stop()
        for item in reversed(list(self.infra.values())):
            item.stop()


def report_link_secret(state: Path) -> str:
    """The local run's key of the spam report links: random, kept in the state directory across restarts."""
    path = state / "report-link.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def self_signed_cert(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for STARTTLS on the local run (kept when already there)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _cert_with_cryptography(cert, key, hostname)
    except ImportError:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
                        "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key


def _cert_with_cryptography(cert: Path, key: Path, hostname: str) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=825))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
                   .sign(private, hashes.SHA256()))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
