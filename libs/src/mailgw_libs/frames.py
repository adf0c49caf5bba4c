"""Binary frame for events that carry a raw message.

Layout: MAGIC (4 bytes) | header length (u32, big endian) | header JSON | zstd(raw).
The header stays readable without decompressing the message, and the message is
never base64-encoded inside JSON.
"""

from __future__ import annotations

import struct
from typing import TypeVar

import zstandard
from pydantic import BaseModel, ValidationError

MAGIC = b"MGW\x01"
_LEN = struct.Struct(">I")
MAX_HEADER_BYTES = 4 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class FrameError(ValueError):
    """The bytes are not a valid frame (truncated, wrong magic, bad header, bomb)."""


def pack(header: BaseModel, raw: bytes, level: int = 3) -> bytes:
    head = header.model_dump_json().encode()
    return MAGIC + _LEN.pack(len(head)) + head + zstandard.ZstdCompressor(level=level).compress(raw)


def unpack(data: bytes, model: type[M], max_raw_bytes: int = 64 * 1024 * 1024) -> tuple[M, bytes]:
    header = unpack_header(data, model)
    start = len(MAGIC) + _LEN.size + _LEN.unpack_from(data, len(MAGIC))[0]
    try:
        # max_output_size bounds memory for frames whose content size is unknown;
        # frames with a declared size are checked against the limit first.
        params = zstandard.get_frame_parameters(data[start:])
        if params.content_size > max_raw_bytes and params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
            raise FrameError(f"raw message of {params.content_size} bytes exceeds {max_raw_bytes}")
        raw = zstandard.ZstdDecompressor().decompress(data[start:], max_output_size=max_raw_bytes)
    except zstandard.ZstdError as exc:
        raise FrameError(f"corrupt message body: {exc}") from exc
    return header, raw


def unpack_header(data: bytes, model: type[M]) -> M:
    if len(data) < len(MAGIC) + _LEN.size or not data.startswith(MAGIC):
        raise FrameError("not a mailgw frame (bad magic or too short)")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if length > MAX_HEADER_BYTES or start + length > len(data):
        raise FrameError(f"frame header length {length} out of bounds")
    try:
        return model.model_validate_json(data[start:start + length])
    except ValidationError as exc:
        raise FrameError(f"invalid frame header: {exc.errors()[:3]}") from exc
