"""Unit tests of the scanning logic: reply parsing, verdicts, and the client against a fake clamd."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from mailgw_antivirus.scanner import ClamdScanner, ScanResult, parse_reply, verdict_for
from mailgw_devstack.infra import free_port


class FakeClamd:
    """Speaks just enough of clamd's protocol (nPING, nINSTREAM) to exercise the client.

    `reply` is sent after the stream's terminating chunk; None means: read everything, never answer.
    """

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.streams: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                command = b""
                while not command.endswith(b"\n"):
                    chunk = conn.recv(1)
                    if not chunk:
                        return  # the client's connectivity probe: connect, close
                    command += chunk
                if command == b"nPING\n":
                    conn.sendall(b"PONG\n")
                    return
                stream = b""
                while True:
                    (size,) = struct.unpack("!L", self._read(conn, 4))
                    if size == 0:
                        break
                    stream += self._read(conn, size)
                self.streams.append(stream)
                if self.reply is None:
                    self._stop.wait(30)
                    return
                conn.sendall(self.reply)
            except (EOFError, OSError):
                return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def fake_clamd() -> Iterator[type[FakeClamd]]:
    made: list[FakeClamd] = []

    class Tracked(FakeClamd):
        def __init__(self, reply: bytes | None) -> None:
            super().__init__(reply)
            made.append(self)

    yield Tracked
    for fake in made:
        fake.close()


def test_parse_reply_clean() -> None:
    assert parse_reply(None) == ScanResult()
    assert not parse_reply(None).failed


def test_parse_reply_found_keeps_the_signature_name_as_is() -> None:
    result = parse_reply({"stream": ("FOUND", "Eicar-Test-Signature-NDB.UNOFFICIAL")})
    assert result.viruses == ("Eicar-Test-Signature-NDB.UNOFFICIAL",)
    assert not result.failed


def test_parse_reply_error_is_a_failure() -> None:
    result = parse_reply({"stream": ("ERROR", "Can't allocate memory")})
    assert result.failed
    assert "Can't allocate memory" in result.error


def test_verdict_for_virus() -> None:
    verdict = verdict_for("m1", ScanResult(viruses=("Win.Test.A", "Win.Test.B")), 12.3456)
    assert verdict.scorer == "antivirus"
    assert [(h.name, h.score, h.detail) for h in verdict.symbols] == [
        ("AV_VIRUS", 1000.0, "Win.Test.A"), ("AV_VIRUS", 1000.0, "Win.Test.B")]
    assert verdict.viruses == ["Win.Test.A", "Win.Test.B"]
    assert verdict.score == 2000.0
    assert not verdict.failed
    assert verdict.duration_ms == 12.346


def test_verdict_for_failure_does_not_score() -> None:
    verdict = verdict_for("m1", ScanResult(error="clamd 127.0.0.1:1: ConnectionError: refused"), 1.0)
    assert [(h.name, h.score) for h in verdict.symbols] == [("AV_FAIL", 0.0)]
    assert "refused" in verdict.symbols[0].detail
    assert verdict.failed and verdict.error == "clamd 127.0.0.1:1: ConnectionError: refused"
    assert verdict.score == 0.0 and verdict.viruses == []


def test_verdict_for_clean() -> None:
    verdict = verdict_for("m1", ScanResult(), 1.0)
    assert verdict.symbols == [] and verdict.score == 0 and not verdict.failed


def test_a_virus_found_wins_over_an_error() -> None:
    result = ScanResult(viruses=("X",), error="clamd ERROR: something else")
    assert not result.failed
    assert verdict_for("m", result, 0).viruses == ["X"]


def test_stream_reaches_clamd_whole_in_chunks(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"stream: OK\n")
    data = bytes(range(256)) * 1200 + b"tail"  # 300 KB: several 64 KB chunks and a short last one
    result = ClamdScanner("127.0.0.1", fake.port, 5.0).scan(data)
    assert result == ScanResult()
    assert fake.streams == [data]


def test_found_reply(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"stream: Win.Test.Fake-1 FOUND\n")
    assert ClamdScanner("127.0.0.1", fake.port, 5.0).scan(b"x" * 10).viruses == ("Win.Test.Fake-1",)


def test_size_limit_reply_is_a_failure(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"INSTREAM size limit exceeded. ERROR\n")
    result = ClamdScanner("127.0.0.1", fake.port, 5.0).scan(b"x" * 10)
    assert result.failed and "too large" in result.error


def test_a_garbled_reply_is_a_failure(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"\0\0garbage\0")
    result = ClamdScanner("127.0.0.1", fake.port, 5.0).scan(b"x" * 10)
    assert result.failed and "unexpected reply" in result.error


def test_a_hung_clamd_fails_within_the_deadline(fake_clamd: type[FakeClamd]) -> None:
    # pyclamd alone would wait 5x the socket timeout (it retries recv); the scan has one deadline.
    fake = fake_clamd(None)
    started = time.monotonic()
    result = ClamdScanner("127.0.0.1", fake.port, 1.0).scan(b"x" * 1000)
    elapsed = time.monotonic() - started
    assert result.failed
    assert "did not answer within 1 s" in result.error or "did not answer within 1.0 s" in result.error
    assert elapsed < 4.5  # one deadline (1 s), not pyclamd's five retried reads (5 s); loose for a noisy machine


def test_unreachable_clamd_is_a_failure_not_an_exception() -> None:
    port = free_port()  # nothing listens there
    result = ClamdScanner("127.0.0.1", port, 2.0).scan(b"hello")
    assert result.failed
    assert f"127.0.0.1:{port}" in result.error


def test_ping(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"")
    assert ClamdScanner("127.0.0.1", fake.port, 2.0).ping()[0] is True
    ok, detail = ClamdScanner("127.0.0.1", free_port(), 2.0).ping(0.5)
    assert ok is False and "could not reach clamd" in detail


async def test_scan_async_runs_off_the_event_loop(fake_clamd: type[FakeClamd]) -> None:
    fake = fake_clamd(b"stream: OK\n")
    assert await ClamdScanner("127.0.0.1", fake.port, 5.0).scan_async(b"abc") == ScanResult()
