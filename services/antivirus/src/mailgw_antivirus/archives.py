"""Archive members under limits: zip, gzip, bzip2, xz, tar, 7z and rar.

Nothing here trusts a size that an archive declares: every decompression is streamed in
chunks of `CHUNK` bytes through `Budget.take`, which stops at the message's total of
unpacked bytes and at the time budget (`StopScan`, the walk ends) and, per member, at the
compression ratio (the member is given up and reported as a bomb, the walk goes on).

Zip members are read raw (stored) through zipfile and decompressed here, because zipfile
itself decompresses bzip2/lzma members without an output bound.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import io
import lzma
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import py7zr
import py7zr.exceptions
import py7zr.io
import rarfile

CHUNK = 256 * 1024
MB = 1024 * 1024

BOMB = "ARCHIVE_BOMB"
TOO_MANY_FILES = "ARCHIVE_TOO_MANY_FILES"
TIMEOUT = "SCAN_TIMEOUT"


class StopScan(Exception):  # a control signal, not an error
    """A limit of the whole message was reached: the walk stops, with this symbol."""

    def __init__(self, symbol: str, detail: str) -> None:
        super().__init__(f"{symbol}: {detail}")
        self.symbol = symbol
        self.detail = detail


class _MemberBomb(Exception):
    """One member expands beyond the allowed ratio."""


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 100 * MB
    max_members: int = 10_000
    max_ratio: float = 100.0
    # The ratio is judged only once a member has produced this much: small files compress well too.
    ratio_min_bytes: int = 1 * MB


class Budget:
    """What one message may still unpack, and until when."""

    def __init__(self, limits: Limits, deadline: float) -> None:
        self.limits = limits
        self.deadline = deadline
        self.unpacked = 0
        self.members = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise StopScan(TIMEOUT, "attachment scan ran out of time")

    def count_members(self, n: int, where: str) -> None:
        self.members += n
        if self.members > self.limits.max_members:
            raise StopScan(TOO_MANY_FILES, f"{where}: more than {self.limits.max_members} archive members")

    def check_declared(self, declared: int, compressed: int) -> str:
        """A reason to skip a member from its declared sizes alone ('' = read it); never allocates."""
        if declared > self.limits.max_total_bytes - self.unpacked:
            return f"declares {declared} bytes unpacked, over the {self.limits.max_total_bytes} byte budget"
        if declared > self.limits.ratio_min_bytes and declared > self.limits.max_ratio * max(compressed, 1):
            return f"declares a ratio of {declared // max(compressed, 1)}:1"
        return ""

    def take(self, n: int, member_total: int, compressed: int) -> None:
        """Account for `n` more unpacked bytes of a member that has produced `member_total` so far."""
        self.check_time()
        self.unpacked += n
        if self.unpacked > self.limits.max_total_bytes:
            raise StopScan(BOMB, f"more than {self.limits.max_total_bytes} bytes unpacked from one message")
        if member_total > self.limits.ratio_min_bytes and member_total > self.limits.max_ratio * max(compressed, 1):
            raise _MemberBomb(f"expands more than {self.limits.max_ratio:g}:1 "
                              f"({member_total} bytes from {compressed})")


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes | None  # None: not read (encrypted, a bomb, or a format we cannot unpack)
    encrypted: bool = False
    bomb: str = ""
    note: str = ""


# --- bounded decompression ---------------------------------------------------------------------

def _zlib_stream(raw: bytes, wbits: int, budget: Budget) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    pending = raw
    while not d.eof:
        chunk = d.decompress(pending, CHUNK)
        pending = d.unconsumed_tail
        if not chunk:
            if not pending:
                break  # truncated: give what we have
            continue
        out += chunk
        budget.take(len(chunk), len(out), len(raw))
    return bytes(out)


def _bounded(decompressor: Any, raw: bytes, budget: Budget) -> bytes:
    """bz2/lzma decompressors: `decompress(data, max_length)`, then b'' to drain."""
    out = bytearray()
    feed = raw
    while not decompressor.eof:
        chunk = decompressor.decompress(feed, CHUNK)
        feed = b""
        if not chunk and decompressor.needs_input:
            break  # truncated
        out += chunk
        budget.take(len(chunk), len(out), len(raw))
    return bytes(out)


def _lzma_zip(raw: bytes, budget: Budget) -> bytes:
    """The LZMA member format of zip (APPNOTE 5.8.8): version, properties size, properties, raw LZMA1."""
    if len(raw) < 4:
        raise zipfile.BadZipFile("truncated LZMA header")
    psize = int.from_bytes(raw[2:4], "little")
    filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, raw[4:4 + psize])]  # type: ignore[attr-defined]
    return _bounded(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), raw[4 + psize:], budget)


def _unpack(method: str, raw: bytes, budget: Budget) -> bytes:
    if method == "deflate":
        return _zlib_stream(raw, -15, budget)
    if method == "gz":
        return _zlib_stream(raw, 16 + 15, budget)
    if method == "bz2":
        return _bounded(bz2.BZ2Decompressor(), raw, budget)
    if method == "xz":
        return _bounded(lzma.LZMADecompressor(), raw, budget)
    if method == "zip-lzma":
        return _lzma_zip(raw, budget)
    raise NotImplementedError(method)


def _member(name: str, method: str, raw: bytes, declared: int, budget: Budget) -> Member:
    reason = budget.check_declared(declared, len(raw)) if declared >= 0 else ""
    if reason:
        return Member(name, None, bomb=reason)
    try:
        return Member(name, _unpack(method, raw, budget))
    except _MemberBomb as exc:
        return Member(name, None, bomb=str(exc))


# --- formats -----------------------------------------------------------------------------------

_ZIP_METHODS = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bz2", zipfile.ZIP_LZMA: "zip-lzma"}


def _zip(data: bytes, where: str, budget: Budget) -> Iterator[Member]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        budget.count_members(len(infos), where)
        for info in infos:
            budget.check_time()
            if info.flag_bits & 0x1:
                yield Member(info.filename, None, encrypted=True)
                continue
            if info.compress_type != zipfile.ZIP_STORED and info.compress_type not in _ZIP_METHODS:
                yield Member(info.filename, None, note=f"compression method {info.compress_type} not unpacked")
                continue
            # Read the member's bytes as stored (zipfile bounds them by compress_size) and unpack them here.
            raw_info = copy.copy(info)
            raw_info.compress_type = zipfile.ZIP_STORED
            raw_info.file_size = info.compress_size
            raw_info.CRC = None  # type: ignore[assignment]  # no CRC check of the compressed bytes
            with zf.open(raw_info) as fh:
                raw = fh.read(info.compress_size)
            if info.compress_type == zipfile.ZIP_STORED:
                yield Member(info.filename, raw)
            else:
                yield _member(info.filename, _ZIP_METHODS[info.compress_type], raw, info.file_size, budget)


def _single(method: str, suffixes: tuple[str, ...]) -> Callable[[bytes, str, Budget], Iterator[Member]]:
    def unpack(data: bytes, where: str, budget: Budget) -> Iterator[Member]:
        budget.count_members(1, where)
        base = where.rsplit("/", 1)[-1]
        name = base
        for suffix in suffixes:
            if base.lower().endswith(suffix):
                name = base[: -len(suffix)] + (".tar" if suffix.startswith(".t") else "")
                break
        else:
            name = base + ".unpacked"
        yield _member(name, method, data, -1, budget)
    return unpack


def _tar(data: bytes, where: str, budget: Budget) -> Iterator[Member]:
    # Uncompressed tar only: a .tar.gz arrives here as the gzip layer's member.
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for info in tf:
            budget.check_time()
            if not info.isfile():
                continue
            budget.count_members(1, where)
            fh = tf.extractfile(info)
            # Bounded by the tar's own bytes, already in memory: a declared size cannot make it larger.
            yield Member(info.name, fh.read() if fh is not None else None)


class _CappedWriter(py7zr.io.Py7zIO):
    def __init__(self, budget: Budget, compressed: int) -> None:
        self.budget = budget
        self.compressed = compressed
        self.buf = bytearray()
        self.bomb = ""

    def write(self, s: bytes | bytearray) -> int:
        self.buf += s
        try:
            self.budget.take(len(s), len(self.buf), self.compressed)
        except _MemberBomb as exc:
            self.bomb = str(exc)
            self.buf = bytearray()
            raise  # stops py7zr's extraction: nothing after a bomb is unpacked
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return bytes(self.buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buf)


class _CappedFactory(py7zr.io.WriterFactory):
    def __init__(self, budget: Budget, compressed: int) -> None:
        self.budget = budget
        self.compressed = compressed
        self.products: dict[str, _CappedWriter] = {}

    def create(self, filename: str) -> py7zr.io.Py7zIO:
        writer = _CappedWriter(self.budget, self.compressed)
        self.products[filename] = writer
        return writer


def _7z(data: bytes, where: str, budget: Budget) -> Iterator[Member]:
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except py7zr.exceptions.PasswordRequired:
        budget.count_members(1, where)
        yield Member("(encrypted 7z header)", None, encrypted=True)
        return
    with archive:
        infos = [i for i in archive.list() if not i.is_directory]
        budget.count_members(len(infos), where)
        if archive.needs_password():
            for info in infos:
                yield Member(info.filename, None, encrypted=True)
            return
        # Declared sizes are only used to refuse early; the writers count what is really produced.
        # py7zr unpacks up to a member's declared size, in blocks as large as that: refusing what the
        # declarations exceed (alone or together) bounds both its time and its memory.
        reasons = {i.filename: budget.check_declared(int(i.uncompressed or 0), len(data)) for i in infos}
        total = sum(int(i.uncompressed or 0) for i in infos)
        if total > budget.limits.max_total_bytes - budget.unpacked and infos and not any(reasons.values()):
            reasons[infos[0].filename] = f"members declare {total} bytes together, over the unpack budget"
        if any(reasons.values()):  # solid archives unpack in one go: refuse all, keep the names
            for info in infos:
                yield Member(info.filename, None, bomb=reasons[info.filename], note="archive not unpacked")
            return
        factory = _CappedFactory(budget, len(data))
        with contextlib.suppress(_MemberBomb):  # the writer that refused knows which member it was
            archive.extractall(factory=factory)
        for info in infos:
            writer = factory.products.get(info.filename)
            if writer is None:
                yield Member(info.filename, None, note="not extracted (extraction stopped)")
            elif writer.bomb:
                yield Member(info.filename, None, bomb=writer.bomb)
            else:
                yield Member(info.filename, bytes(writer.buf))


def rar_headers_encrypted(data: bytes) -> bool:
    """From the header alone: are the RAR archive's headers (so its file names) encrypted?"""
    if data.startswith(b"Rar!\x1a\x07\x01\x00"):  # RAR 5: CRC32, vint size, vint type; 4 = encryption header
        pos = 12
        while pos < len(data) and data[pos] & 0x80:
            pos += 1
        return pos + 1 < len(data) and data[pos + 1] == 4
    if data.startswith(b"Rar!\x1a\x07\x00"):  # RAR 4: main header (type 0x73) flag 0x0080 = MHD_PASSWORD
        head = data[7:14]
        return len(head) == 7 and head[2] == 0x73 and bool(int.from_bytes(head[3:5], "little") & 0x0080)
    return False


def _rar(data: bytes, where: str, budget: Budget) -> Iterator[Member]:
    if rar_headers_encrypted(data):
        budget.count_members(1, where)
        yield Member("(encrypted rar header)", None, encrypted=True)
        return
    with rarfile.RarFile(io.BytesIO(data)) as rf:
        infos = [i for i in rf.infolist() if not i.is_dir()]
        budget.count_members(len(infos), where)
        for info in infos:
            budget.check_time()
            name = info.filename or "?"
            if info.needs_password():
                yield Member(name, None, encrypted=True)
            elif info.compress_type == rarfile.RAR_M0:  # stored: rarfile reads it without an unrar tool
                with rf.open(info) as fh:
                    yield Member(name, fh.read(budget.limits.max_total_bytes))
            else:
                yield Member(name, None, note="compressed rar member not unpacked (no unrar tool)")


UNPACKERS: dict[str, Callable[[bytes, str, Budget], Iterator[Member]]] = {
    "zip": _zip,
    "ooxml": _zip,
    "gz": _single("gz", (".tgz", ".gz")),
    "bz2": _single("bz2", (".tbz2", ".tbz", ".bz2")),
    "xz": _single("xz", (".txz", ".xz")),
    "tar": _tar,
    "7z": _7z,
    "rar": _rar,
}


def members(kind: str, data: bytes, where: str, budget: Budget) -> Iterator[Member]:
    """The members of an archive of `kind` (see filetypes.ARCHIVE_KINDS). Corrupt archives raise."""
    return UNPACKERS[kind](data, where, budget)
