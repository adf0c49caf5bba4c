"""The scanner against a real clamd (fixture `clamd`, signatures from deploy/clamav/)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailgw_antivirus.scanner import ClamdScanner, verdict_for
from mailgw_devstack.infra import Managed, free_port

CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")


@pytest.fixture
def scanner(clamd: Managed) -> ClamdScanner:
    return ClamdScanner("127.0.0.1", clamd.port, 30.0)


def test_eicar_plain(scanner: ClamdScanner, eicar: bytes) -> None:
    verdict = verdict_for("m1", scanner.scan(eicar), 0)
    assert verdict.viruses == ["Eicar-Test-Signature-NDB.UNOFFICIAL"]
    assert [(h.name, h.score, h.detail) for h in verdict.symbols] == [
        ("AV_VIRUS", 1000.0, "Eicar-Test-Signature-NDB.UNOFFICIAL")]
    assert not verdict.failed


def test_eicar_in_a_zip_attachment(scanner: ClamdScanner, eicar: bytes, mail: Callable[..., bytes],
                                   zip_of: Callable[[str, bytes], bytes]) -> None:
    raw = mail(attachments=(("invoice.zip", "application/zip", zip_of("invoice.com", eicar)),))
    assert eicar not in raw  # base64 of a deflated zip: clamd must decode the MIME part and unpack the zip
    result = scanner.scan(raw)
    assert result.viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",)


def test_clean_message(scanner: ClamdScanner, mail: Callable[..., bytes],
                       zip_of: Callable[[str, bytes], bytes]) -> None:
    raw = mail(attachments=(("report.zip", "application/zip", zip_of("report.txt", b"quarterly numbers\n" * 100)),))
    verdict = verdict_for("m1", scanner.scan(raw), 0)
    assert verdict.symbols == [] and verdict.viruses == [] and not verdict.failed


@pytest.mark.skipif(not CLAM_EXE.exists(), reason="Debian package clamav-testfiles is not installed")
def test_debian_clamav_testfile_attached(scanner: ClamdScanner, mail: Callable[..., bytes]) -> None:
    raw = mail(attachments=(("clam.exe", "application/octet-stream", CLAM_EXE.read_bytes()),))
    result = scanner.scan(raw)
    assert result.viruses == ("ClamAV-Test-File-NDB.UNOFFICIAL",)


def test_clamd_down_gives_av_fail() -> None:
    port = free_port()  # closed: nothing listens
    verdict = verdict_for("m1", ClamdScanner("127.0.0.1", port, 5.0).scan(b"hello"), 0)
    assert [(h.name, h.score) for h in verdict.symbols] == [("AV_FAIL", 0.0)]
    assert verdict.failed and f"127.0.0.1:{port}" in verdict.error
    assert verdict.symbols[0].detail == verdict.error


def test_stream_larger_than_clamd_accepts_gives_av_fail(small_clamd: Managed) -> None:
    data = b"A" * (3 * 1024 * 1024)  # clamd's StreamMaxLength is 1 MB here
    verdict = verdict_for("m1", ClamdScanner("127.0.0.1", small_clamd.port, 10.0).scan(data), 0)
    assert verdict.failed and [h.name for h in verdict.symbols] == ["AV_FAIL"]
    assert "3145728 bytes" in verdict.error


def test_ping_real_clamd(scanner: ClamdScanner) -> None:
    ok, detail = scanner.ping(1.5)
    assert ok, detail


def test_scan_time_per_message(scanner: ClamdScanner, eicar: bytes, mail: Callable[..., bytes],
                               zip_of: Callable[[str, bytes], bytes]) -> None:
    """Not a benchmark: a sanity bound, and the figure in the output (-s) for the README."""
    raw = mail(body="Hello\n" * 2000, attachments=(("a.zip", "application/zip", zip_of("a.com", eicar)),))
    runs = []
    for _ in range(20):
        started = time.perf_counter()
        assert scanner.scan(raw).viruses
        runs.append((time.perf_counter() - started) * 1000)
    runs.sort()
    print(f"\nclamd INSTREAM scan of a {len(raw)} byte message: median {runs[10]:.1f} ms, max {runs[-1]:.1f} ms")
    assert runs[10] < 1000
