"""clamd client: an INSTREAM scan of one raw message, and the verdict it gives.

pyclamd is synchronous, so `ClamdScanner.scan` blocks; async code calls `scan_async`,
which runs it in a worker thread. A scan never raises for clamd trouble: a clamd that
is down, slow, or refuses the stream gives a failed result (`AV_FAIL`), and the rules
service decides what an unscanned message may do.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyclamd

from mailgw_libs.events import SymbolHit, Verdict

if TYPE_CHECKING:
    from .attachments import Layer2Result

SCORER = "antivirus"
VIRUS_SYMBOL = "AV_VIRUS"
FAIL_SYMBOL = "AV_FAIL"
VIRUS_SCORE = 1000.0


@dataclass(frozen=True)
class ScanResult:
    """What clamd said about one message: signature names found, or why there is no answer."""

    viruses: tuple[str, ...] = ()
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error) and not self.viruses


class _DeadlineSocket:
    """A TCP socket whose operations share one deadline and whose `send` sends everything.

    Why: pyclamd retries a failed `recv` five times, each with the full socket timeout (a hung
    clamd would hold a scan for 5x the timeout), and writes chunks with `send`, which may write
    only part of one and break the INSTREAM framing. This wrapper fixes both and leaves
    pyclamd's protocol code as it is.
    """

    def __init__(self, host: str, port: int, deadline: float) -> None:
        self._deadline = deadline
        self._sock = socket.create_connection((host, port), timeout=self._remaining())

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("clamd scan deadline exceeded")
        return remaining

    def settimeout(self, _timeout: float | None) -> None:
        """Ignored: the scan's deadline sets every operation's timeout."""

    def send(self, data: bytes) -> int:
        self._sock.settimeout(self._remaining())
        self._sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        self._sock.settimeout(self._remaining())
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()


class _Client(pyclamd.ClamdNetworkSocket):
    """pyclamd's network client with one deadline for the whole conversation (see `_DeadlineSocket`)."""

    clamd_socket: Any

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self._deadline = time.monotonic() + timeout_s
        self.clamd_socket = None
        super().__init__(host, port, timeout_s)  # connects once to test the address, like pyclamd does

    def _init_socket(self) -> None:
        try:
            self.clamd_socket = _DeadlineSocket(self.host, self.port, self._deadline)
        except OSError as exc:
            raise pyclamd.ConnectionError(f"could not reach clamd at {self.host}:{self.port}: {exc}") from exc

    def expired(self) -> bool:
        return time.monotonic() >= self._deadline

    def close(self) -> None:
        # pyclamd leaves the socket open when a call fails half way.
        if self.clamd_socket is not None:
            self.clamd_socket.close()


class ClamdScanner:
    """Scans byte strings with one clamd over TCP (INSTREAM); a new connection per call, so thread-safe."""

    def __init__(self, host: str, port: int, timeout_s: float, chunk_size: int = 64 * 1024) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        # Larger than pyclamd's 4 KB default: fewer syscalls for multi-megabyte messages.
        self.chunk_size = chunk_size

    def scan(self, data: bytes) -> ScanResult:
        """Blocking scan of `data`; clamd failures become a failed result, never an exception."""
        client: _Client | None = None
        try:
            client = _Client(self.host, self.port, self.timeout_s)
            reply = client.scan_stream(data, chunk_size=self.chunk_size)
        except pyclamd.BufferTooLongError as exc:
            return ScanResult(error=f"stream of {len(data)} bytes too large for clamd: {exc}")
        except (BrokenPipeError, ConnectionResetError) as exc:
            # clamd drops the connection when the stream exceeds its StreamMaxLength.
            return ScanResult(error=f"clamd {self.host}:{self.port} closed the connection during a stream of "
                                    f"{len(data)} bytes (over StreamMaxLength?): {type(exc).__name__}: {exc}")
        except IndexError as exc:
            # pyclamd's reply parser fails on a reply it does not understand: a clamd problem, not the message's.
            return ScanResult(error=f"clamd {self.host}:{self.port}: unexpected reply ({exc!r})")
        except OSError as exc:  # pyclamd.ConnectionError, ConnectionError, TimeoutError are all OSError
            if client is not None and client.expired():
                # pyclamd turns our TimeoutError into a vague "Unable to scan stream": say what happened.
                return ScanResult(error=f"clamd {self.host}:{self.port} did not answer within {self.timeout_s:g} s")
            return ScanResult(error=f"clamd {self.host}:{self.port}: {type(exc).__name__}: {exc}")
        finally:
            if client is not None:
                client.close()
        return parse_reply(reply)

    async def scan_async(self, data: bytes) -> ScanResult:
        return await asyncio.to_thread(self.scan, data)

    def ping(self, timeout_s: float | None = None) -> tuple[bool, str]:
        """Readiness: does clamd answer PING with PONG?"""
        client: _Client | None = None
        try:
            client = _Client(self.host, self.port, timeout_s if timeout_s is not None else self.timeout_s)
            client.ping()
        except OSError as exc:
            return False, f"clamd {self.host}:{self.port}: {exc}"
        finally:
            if client is not None:
                client.close()
        return True, f"clamd {self.host}:{self.port}"


def parse_reply(reply: dict[str, tuple[str, str]] | None) -> ScanResult:
    """pyclamd's answer (`None` when clean, else {"stream": ("FOUND"|"ERROR", text)}) as a result."""
    if not reply:
        return ScanResult()
    viruses: list[str] = []
    errors: list[str] = []
    for status, text in reply.values():
        if status == "FOUND":
            viruses.append(text)
        else:
            errors.append(f"clamd {status}: {text}")
    return ScanResult(viruses=tuple(viruses), error="; ".join(errors))


def verdict_for(message_id: str, result: ScanResult, duration_ms: float,
                layer2: Layer2Result | None = None) -> Verdict:
    """One verdict for both layers: AV_VIRUS per clamd signature (or AV_FAIL when clamd gave no
    answer), then the layer-2 symbols; layer-2 hard findings join the viruses."""
    hits: list[SymbolHit] = []
    viruses = list(result.viruses)
    if result.viruses:
        hits = [SymbolHit(name=VIRUS_SYMBOL, score=VIRUS_SCORE, detail=name) for name in result.viruses]
    elif result.failed:
        hits = [SymbolHit(name=FAIL_SYMBOL, score=0.0, detail=result.error[:500])]
    if layer2 is not None:
        hits += layer2.hits
        viruses += [v for v in layer2.viruses if v not in viruses]
    if result.failed:
        return Verdict.of(message_id, SCORER, hits, duration_ms, viruses=viruses, failed=True, error=result.error)
    return Verdict.of(message_id, SCORER, hits, duration_ms, viruses=viruses)
