"""rspamd 3.4 on the folds: its own configuration directory (Debian's config with local overrides), offline,
Bayes in the bench's redis-server (a database of its own, flushed per fold), trained with `rspamc learn_spam` /
`learn_ham` through the controller, scanned through the HTTP API (`/checkv2`) of 2 normal workers.
DNS goes to a local resolver answering NXDOMAIN to everything (offline, no timeouts)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from folds import Sample, Tally

from mailgw_devstack.infra import free_port, wait_port

WORKERS = 2
REDIS_DB = 7
SPAM_ACTIONS = {"reject", "add header", "rewrite subject"}  # score >= 6 with the default actions
# Modules that ask the network (DNS lists, DNS-based authentication, fuzzy hashes, updates) or need history.
OFFLINE = ("rbl", "surbl", "fuzzy_check", "asn", "dkim", "dmarc", "spf", "arc", "mx_check", "dcc", "neural",
           "ratelimit", "greylist", "replies", "history_redis", "url_redirector", "rspamd_update", "reputation",
           "external_services", "antivirus", "clickhouse", "elastic", "metric_exporter", "p0f", "bimi",
           "spamtrap", "whitelist", "emails", "hfilter", "dkim_signing", "arc_signing")


class NxdomainResolver:
    """A resolver on 127.0.0.1 that answers every query NXDOMAIN at once: rspamd stays offline without waiting
    for DNS timeouts (with an unreachable resolver every message waited for the timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True, name="nxdomain").start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            end = 12
            while end < len(query) and query[end]:
                end += query[end] + 1
            question = query[12:end + 5]
            # same id, flags QR|RD|RA + rcode 3, one question, no records
            self.sock.sendto(query[:2] + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + question, peer)

    def close(self) -> None:
        self.sock.close()


def _configure(base: Path, redis_port: int, dns_port: int) -> tuple[Path, int, int]:
    local = base / "local"
    for sub in ("local.d", "override.d"):
        (local / sub).mkdir(parents=True)
    for sub in ("db", "run", "log"):
        (base / sub).mkdir()
    normal, controller, proxy = free_port(), free_port(), free_port()
    over = local / "override.d"
    (over / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{normal}";\ncount = {WORKERS};\n')
    (over / "worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{controller}";\n')
    (over / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{proxy}";\n')
    (over / "logging.inc").write_text(f'type = "file";\nfilename = "{base}/log/rspamd.log";\nlevel = "error";\n')
    (over / "options.inc").write_text(f'dns {{\n  nameserver = ["127.0.0.1:{dns_port}"];\n  timeout = 1s;\n'
                                      '  retransmits = 0;\n}\n')
    (local / "local.d" / "redis.conf").write_text(f'servers = "127.0.0.1:{redis_port}";\ndb = "{REDIS_DB}";\n')
    (local / "local.d" / "classifier-bayes.conf").write_text("autolearn = false;\nmin_learns = 200;\n")
    for module in OFFLINE:
        (local / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
    return local, normal, controller


def _learn(controller: int, label: str, paths: list[Path]) -> None:
    for start in range(0, len(paths), 500):
        subprocess.run(["rspamc", "-h", f"127.0.0.1:{controller}", "-n", "4", f"learn_{label}",
                        *(str(p) for p in paths[start:start + 500])],
                       check=True, capture_output=True, timeout=3600)


def run(samples: list[Sample], base: Path, redis_port: int, folds: int = 5) -> Tally:
    if not shutil.which("rspamd") or not shutil.which("rspamc"):
        raise SystemExit("rspamd is not installed: apt-get install -y rspamd")
    resolver = NxdomainResolver()
    local, normal, controller = _configure(base, redis_port, resolver.port)
    store = redis.Redis(port=redis_port, db=REDIS_DB)
    daemon = subprocess.Popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "-c", "/etc/rspamd/rspamd.conf",
         f"--var=LOCAL_CONFDIR={local}", f"--var=DBDIR={base}/db", f"--var=RUNDIR={base}/run",
         f"--var=LOGDIR={base}/log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tally = Tally()
    try:
        wait_port(normal, 120, daemon, "rspamd")
        wait_port(controller, 120, daemon, "rspamd controller")
        with httpx.Client(timeout=120) as client:
            def scan(sample: Sample) -> tuple[str, bool]:
                answer = client.post(f"http://127.0.0.1:{normal}/checkv2", content=sample.raw).json()
                return sample.label, answer.get("action") in SPAM_ACTIONS

            for fold in range(folds):
                store.flushdb()
                started = time.perf_counter()
                train = [s for s in samples if s.fold != fold]
                _learn(controller, "spam", [s.path for s in train if s.label == "spam"])
                _learn(controller, "ham", [s.path for s in train if s.label == "ham"])
                print(f"  rspamd fold {fold + 1}: trained on {len(train)} in {time.perf_counter() - started:.0f} s",
                      flush=True)
                test = [s for s in samples if s.fold == fold]
                scan(test[0])
                started = time.perf_counter()
                with ThreadPoolExecutor(WORKERS * 2) as pool:
                    for label, is_spam in pool.map(scan, test):
                        tally.add(label, is_spam)
                tally.seconds += time.perf_counter() - started
                tally.scanned += len(test)
                print("  " + tally.line(f"rspamd after fold {fold + 1}"), flush=True)
    finally:
        daemon.terminate()
        daemon.wait(30)
        store.close()
        resolver.close()
    return tally
