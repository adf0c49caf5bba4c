"""Layer 1: clamd (through pyclamd, INSTREAM) on the whole message and on each decoded MIME part.

pyclamd is synchronous, so `ClamdScanner.scan` blocks; async code calls `scan_async` or
`scan_message`, which run it on the scanner's own thread pool: at most `max_connections`
clamd conversations at a time (the pool), never on the event loop. clamd answers one command
per connection outside an IDSESSION and pyclamd has no sessions, so the pool bounds concurrent
connections rather than keeping them open; a connect on loopback or a unix socket costs ~0.1 ms.

clamd is reached over TCP (`host`, `port`) or a unix socket (`unix_socket`, which wins when set).
A scan never raises for clamd trouble: a clamd that is down, slow, or refuses the stream gives a
failed result (`AV_FAIL`), and the rules service decides what an unscanned message may do.

Why each part too: clamd parses the MIME structure of the whole message itself, and a message
built to confuse one MIME parser (broken boundaries, odd transfer encodings) may hide a part from
clamd that the stdlib parser, which delivery and mail clients resemble, does decode. Each distinct
decoded leaf part is therefore streamed on its own as well (at most `max_parts`).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyclamd
from pyclamd.pyclamd import _ClamdGeneric

from mailgw_libs import mime
from mailgw_libs.events import AttachmentInfo, SymbolHit, Verdict

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
    # How many INSTREAM scans this result stands for (the message and its parts).
    scans: int = 1

    @property
    def failed(self) -> bool:
        return bool(self.error) and not self.viruses


def merge(results: Sequence[tuple[str, ScanResult]]) -> ScanResult:
    """One result for the scans of a message: every distinct signature, in order; the errors, each with
    where it happened. A virus found anywhere outweighs a failed scan elsewhere (`failed` is False)."""
    viruses: list[str] = []
    errors: list[str] = []
    for where, result in results:
        viruses += [v for v in result.viruses if v not in viruses]
        if result.error:
            errors.append(f"{where}: {result.error}" if where else result.error)
    return ScanResult(tuple(viruses), "; ".join(errors), scans=len(results))


@dataclass(frozen=True)
class ClamdAddress:
    """Where clamd listens: a unix socket path, else TCP host and port."""

    host: str = "127.0.0.1"
    port: int = 3310
    unix_socket: str = ""

    def __str__(self) -> str:
        return f"unix:{self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"

    def connect(self, timeout_s: float) -> socket.socket:
        if self.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            try:
                sock.connect(self.unix_socket)
            except OSError:
                sock.close()
                raise
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout_s)


class _DeadlineSocket:
    """A clamd socket whose operations share one deadline and whose `send` sends everything.

    Why: pyclamd retries a failed `recv` five times, each with the full socket timeout (a hung
    clamd would hold a scan for 5x the timeout), and writes chunks with `send`, which may write
    only part of one and break the INSTREAM framing. This wrapper fixes both and leaves
    pyclamd's protocol code as it is.
    """

    def __init__(self, address: ClamdAddress, deadline: float) -> None:
        self._deadline = deadline
        self._sock = address.connect(self._remaining())

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


class _Client(_ClamdGeneric):
    """pyclamd's protocol code over our socket: one deadline for the whole conversation (see
    `_DeadlineSocket`), TCP or unix. Unlike pyclamd's own clients it does not open a test
    connection first: a scan costs one connection, not two."""

    clamd_socket: Any

    def __init__(self, address: ClamdAddress, timeout_s: float) -> None:
        super().__init__()
        self.address = address
        self._deadline = time.monotonic() + timeout_s
        self.clamd_socket = None

    def _init_socket(self) -> None:
        try:
            self.clamd_socket = _DeadlineSocket(self.address, self._deadline)
        except OSError as exc:
            raise pyclamd.ConnectionError(f"could not reach clamd at {self.address}: {exc}") from exc

    def expired(self) -> bool:
        return time.monotonic() >= self._deadline

    def close(self) -> None:
        # pyclamd leaves the socket open when a call fails half way.
        if self.clamd_socket is not None:
            self.clamd_socket.close()


def distinct_parts(raw: bytes, max_parts: int) -> list[tuple[str, bytes]]:
    """(where, decoded payload) of the message's leaf parts worth a scan of their own: non-empty, each
    distinct payload once, at most `max_parts` (the whole-message scan still covers the rest). Blocking."""
    out: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    for index, part in enumerate(mime.leaf_parts(mime.parse(raw))):
        if len(out) >= max_parts:
            break
        digest = hashlib.sha256(part.payload).digest()
        if not part.payload or digest in seen:
            continue
        seen.add(digest)
        out.append((f"part {index}" + (f" ({part.filename[:80]})" if part.filename else ""), part.payload))
    return out


class ClamdScanner:
    """Scans byte strings with one clamd (INSTREAM); a new connection per call, so thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3310, timeout_s: float = 30.0,
                 chunk_size: int = 64 * 1024, *, unix_socket: str = "", max_connections: int = 4,
                 max_parts: int = 50) -> None:
        self.address = ClamdAddress(host, port, unix_socket)
        self.timeout_s = timeout_s
        # Larger than pyclamd's 4 KB default: fewer syscalls for multi-megabyte messages.
        self.chunk_size = chunk_size
        self.max_parts = max_parts
        # The pool: every async scan runs on one of these threads, so at most this many clamd
        # connections are open at once (clamd's own MaxThreads should be at least as large).
        self.executor = ThreadPoolExecutor(max_workers=max(1, max_connections), thread_name_prefix="clamd")

    def scan(self, data: bytes) -> ScanResult:
        """Blocking scan of `data`; clamd failures become a failed result, never an exception."""
        client: _Client | None = None
        where = f"clamd {self.address}"
        try:
            client = _Client(self.address, self.timeout_s)
            reply = client.scan_stream(data, chunk_size=self.chunk_size)
        except pyclamd.BufferTooLongError as exc:
            return ScanResult(error=f"stream of {len(data)} bytes too large for clamd: {exc}")
        except (BrokenPipeError, ConnectionResetError) as exc:
            # clamd drops the connection when the stream exceeds its StreamMaxLength.
            return ScanResult(error=f"{where} closed the connection during a stream of "
                                    f"{len(data)} bytes (over StreamMaxLength?): {type(exc).__name__}: {exc}")
        except IndexError as exc:
            # pyclamd's reply parser fails on a reply it does not understand: a clamd problem, not the message's.
            return ScanResult(error=f"{where}: unexpected reply ({exc!r})")
        except OSError as exc:  # pyclamd.ConnectionError, ConnectionError, TimeoutError are all OSError
            if client is not None and client.expired():
                # pyclamd turns our TimeoutError into a vague "Unable to scan stream": say what happened.
                return ScanResult(error=f"{where} did not answer within {self.timeout_s:g} s")
            return ScanResult(error=f"{where}: {type(exc).__name__}: {exc}")
        finally:
            if client is not None:
                client.close()
        return parse_reply(reply)

    async def scan_async(self, data: bytes) -> ScanResult:
        """`scan` on the pool: waits for a free connection slot, never blocks the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.scan, data)

    async def scan_message(self, raw: bytes) -> ScanResult:
        """The whole message and each distinct decoded leaf part, concurrently through the pool, as one result."""
        parts = await asyncio.to_thread(distinct_parts, raw, self.max_parts) if self.max_parts > 0 else []
        jobs = [("", raw), *parts]
        results = await asyncio.gather(*(self.scan_async(data) for _, data in jobs))
        return merge([(where, result) for (where, _), result in zip(jobs, results, strict=True)])

    def ping(self, timeout_s: float | None = None) -> tuple[bool, str]:
        """Readiness: does clamd answer PING with PONG?"""
        client: _Client | None = None
        try:
            client = _Client(self.address, timeout_s if timeout_s is not None else self.timeout_s)
            if not client.ping():
                return False, f"clamd {self.address}: no PONG"
        except OSError as exc:
            return False, f"clamd {self.address}: {exc}"
        finally:
            if client is not None:
                client.close()
        return True, f"clamd {self.address}"

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


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
    answer), then the layer-2 symbols; layer-2 hard findings join the viruses; layer 2's inventory
    of the parts becomes `Verdict.attachments`."""
    hits: list[SymbolHit] = []
    viruses = list(result.viruses)
    if result.viruses:
        hits = [SymbolHit(name=VIRUS_SYMBOL, score=VIRUS_SCORE, detail=name) for name in result.viruses]
    elif result.failed:
        hits = [SymbolHit(name=FAIL_SYMBOL, score=0.0, detail=result.error[:500])]
    attachments: list[AttachmentInfo] = []
    if layer2 is not None:
        hits += layer2.hits
        viruses += [v for v in layer2.viruses if v not in viruses]
        attachments = list(layer2.attachments)
    if result.failed:
        verdict = Verdict.of(message_id, SCORER, hits, duration_ms, viruses=viruses, failed=True, error=result.error)
    else:
        verdict = Verdict.of(message_id, SCORER, hits, duration_ms, viruses=viruses)
    return verdict.model_copy(update={"attachments": attachments}) if attachments else verdict
