"""Layer 1 on the real clamd (fixture `clamd`, signatures from deploy/clamav/) with layer 2 beside it:
the issue's detection matrix, Debian's clamav-testfiles, the pool, the unix socket, clamd down."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgw_antivirus.app import make_policy
from mailgw_antivirus.attachments import AttachmentPolicy
from mailgw_antivirus.scanner import ClamdScanner, distinct_parts, verdict_for
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import Managed, free_port
from mailgw_libs import mime

TESTFILES = Path("/usr/share/clamav-testfiles")


@pytest.fixture
def scanner(clamd: Managed) -> Iterator[ClamdScanner]:
    s = ClamdScanner("127.0.0.1", clamd.port, 30.0, max_connections=4)
    yield s
    s.executor.shutdown()


@pytest.fixture(scope="module")
def policy() -> AttachmentPolicy:
    return make_policy(AntivirusSettings())


async def test_detection_matrix(scanner: ClamdScanner, policy: AttachmentPolicy,
                                eicar_cases: list[Any]) -> None:
    for case in eicar_cases:
        started = time.perf_counter()
        result, layer2 = await asyncio.gather(scanner.scan_message(case.raw), policy.scan_async(case.raw))
        elapsed = time.perf_counter() - started
        verdict = verdict_for("m", result, elapsed * 1000, layer2)
        names = {h.name for h in verdict.symbols}
        assert not verdict.failed, (case.name, verdict.error)
        assert bool(result.viruses) == case.clamd, (case.name, result)
        assert case.layer2 <= names, (case.name, names)
        if case.clamd:
            assert "AV_VIRUS" in names and verdict.symbols[0].detail == "Eicar-Test-Signature-NDB.UNOFFICIAL"
        if not case.layer2 and not case.clamd:
            assert verdict.symbols == [], case.name
        # Bombs and deep nesting are bounded by clamd's limits and layer 2's budget (a hang guard, not a timing).
        assert elapsed < 60, case.name


async def test_quoted_printable_is_caught_by_the_part_scan(scanner: ClamdScanner, eicar: bytes,
                                                           eicar_cases: list[Any]) -> None:
    (case,) = [c for c in eicar_cases if c.name.startswith("EICAR quoted-printable")]
    assert eicar not in case.raw and b"EICAR" not in case.raw
    (_, part), = distinct_parts(case.raw, 50)
    assert eicar in part  # the decoded part, streamed on its own
    assert (await scanner.scan_message(case.raw)).viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",)


async def test_odd_content_type_is_scanned_whole_and_by_parts(scanner: ClamdScanner, eicar: bytes,
                                                              zip_of: Callable[[str, bytes], bytes]) -> None:
    """A top-level content type with a comment and odd case: the stdlib parser sees one opaque part, clamd's own
    MIME parser still finds the zipped EICAR in the whole message. Why both scans run: each parser catches what
    the other misses."""
    import base64
    body = base64.encodebytes(zip_of("a.com", eicar)).replace(b"\n", b"\r\n")
    raw = (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: (comment) MultiPart/Mixed; boundary=\"b1\"\r\n\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--b1\r\nContent-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + body + b"--b1--\r\n")
    assert (await scanner.scan_async(raw)).viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",)
    assert any(eicar in p for _, p in distinct_parts(raw, 50)) is False  # zipped: found by unpacking
    result = await scanner.scan_message(raw)
    assert result.viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",) and result.scans == 2  # whole + 1 part


@pytest.mark.skipif(not TESTFILES.is_dir(), reason="Debian package clamav-testfiles is not installed")
async def test_every_debian_clamav_testfile_is_detected(scanner: ClamdScanner, mail: Callable[..., bytes]) -> None:
    files = sorted(p for p in TESTFILES.iterdir() if p.is_file())  # noqa: ASYNC240 - a test's setup
    assert len(files) >= 40
    missed = []
    for path in files:
        raw = mail(attachments=((path.name, "application/octet-stream", path.read_bytes()),))
        result = await scanner.scan_message(raw)
        if result.viruses != ("ClamAV-Test-File-NDB.UNOFFICIAL",):
            missed.append((path.name, result))
    assert missed == []


async def test_unix_socket(clamd: Managed, eicar: bytes) -> None:
    path = clamd.log.parent / "clamd.sock"  # devstack's clamd listens there too
    scanner = ClamdScanner(unix_socket=str(path), timeout_s=10.0)
    assert scanner.ping(1.5) == (True, f"clamd unix:{path}")
    assert (await scanner.scan_async(eicar)).viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",)
    missing = ClamdScanner(unix_socket=str(path.parent / "nope.sock"), timeout_s=2.0)
    result = await missing.scan_message(b"Subject: x\r\n\r\nhello\r\n")
    assert result.failed and "nope.sock" in result.error


async def test_clamd_down_is_av_fail_for_the_message_and_its_parts(eicar: bytes,
                                                                   mail: Callable[..., bytes]) -> None:
    port = free_port()
    scanner = ClamdScanner("127.0.0.1", port, 2.0)
    raw = mail(attachments=(("a.txt", "text/plain", b"hello"),))
    result = await scanner.scan_message(raw)
    verdict = verdict_for("m", result, 0)
    assert verdict.failed and [h.name for h in verdict.symbols] == ["AV_FAIL"]
    assert result.scans == 3 and f"127.0.0.1:{port}" in verdict.error


async def test_virus_in_a_part_outweighs_a_failed_whole_message_scan(small_clamd: Managed, eicar: bytes,
                                                                     mail: Callable[..., bytes]) -> None:
    """Over StreamMaxLength (1 MB on this clamd) the whole message fails, the small infected part is still found."""
    raw = mail(attachments=(("big.bin", "application/octet-stream", b"A" * (2 * 1024 * 1024)),
                            ("e.com", "application/octet-stream", eicar)))
    result = await ClamdScanner("127.0.0.1", small_clamd.port, 10.0).scan_message(raw)
    assert result.viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",) and not result.failed
    assert "StreamMaxLength" in result.error or "too large" in result.error


def test_distinct_parts_is_bounded_and_skips_repeats(mail: Callable[..., bytes]) -> None:
    raw = mail(attachments=tuple((f"f{i}.txt", "text/plain", b"same bytes") for i in range(30))
               + tuple((f"g{i}.txt", "text/plain", f"file {i}".encode()) for i in range(100)))
    parts = distinct_parts(raw, 50)
    assert len(parts) == 50 and len({p for _, p in parts}) == 50
    assert parts[0][0] == "part 0" and parts[1][0] == "part 1 (f0.txt)"
    assert distinct_parts(b"\x00\xff garbage without headers", 50) != []  # hostile input: no exception
    assert distinct_parts(b"", 50) == []


class _SlowClamd:
    """A fake clamd that holds each connection for `hold_s` and counts how many are open at once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.open = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            data = b""
            while not data.endswith(b"\0\0\0\0"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            time.sleep(self.hold_s)
            conn.sendall(b"stream: OK\n")
        finally:
            with self.lock:
                self.open -= 1
            conn.close()


async def test_the_pool_bounds_concurrent_connections_and_keeps_the_loop_free() -> None:
    fake = _SlowClamd(0.2)
    scanner = ClamdScanner("127.0.0.1", fake.port, 10.0, max_connections=3)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(scanner.scan_async(b"data %d" % i) for i in range(9)))
    task.cancel()
    fake.server.close()
    await scanner.close()
    assert all(not r.failed and not r.viruses for r in results)
    assert fake.peak == 3
    assert ticks > 10  # the event loop ran while the scans waited on clamd


def test_part_indexes_match_leaf_parts(mail: Callable[..., bytes], policy: AttachmentPolicy, eicar: bytes,
                                       zip_of: Callable[[str, bytes], bytes]) -> None:
    raw = mail(attachments=(("outer.zip", "application/zip", zip_of("inner.zip", zip_of("a.com", eicar))),
                            ("notes.txt", "text/plain", b"hello")))
    result = policy.scan(raw)
    leaves = mime.leaf_parts(mime.parse(raw))
    assert [a.part_index for a in result.attachments] == list(range(len(leaves)))
    by_name = {a.filename: a for a in result.attachments}
    outer = by_name["outer.zip"]
    assert leaves[outer.part_index].filename == "outer.zip"
    assert (outer.declared_type, outer.detected_type) == ("application/zip", "application/zip")
    assert [(m.name, m.content_type) for m in outer.archive_members] == [
        ("inner.zip", "application/zip"), ("inner.zip/a.com", "text/plain")]
    assert by_name["notes.txt"].archive_members == [] and by_name["notes.txt"].size == 5
