from datetime import UTC, datetime

import pytest
import zstandard

from mailgw_libs import frames
from mailgw_libs.events import Direction, MailReceived


def envelope(**kw: object) -> MailReceived:
    base = dict(message_id="01TEST", received_at=datetime(2026, 1, 1, tzinfo=UTC), client_ip="192.0.2.1",
                mail_from="a@example.org", rcpt_tos=["b@example.com"], direction=Direction.INBOUND, size=3)
    base.update(kw)
    return MailReceived.model_validate(base)


def test_round_trip_keeps_bytes_exactly() -> None:
    raw = bytes(range(256)) * 100 + b"\r\n.\r\n"
    header, out = frames.unpack(frames.pack(envelope(), raw), MailReceived)
    assert out == raw
    assert header.message_id == "01TEST"


def test_header_readable_without_decompressing() -> None:
    data = frames.pack(envelope(), b"x" * 10)
    assert frames.unpack_header(data, MailReceived).rcpt_tos == ["b@example.com"]


def test_unknown_header_fields_are_ignored() -> None:
    head = envelope().model_dump_json().replace('"size":3', '"size":3,"future_field":"x"').encode()
    data = frames.MAGIC + len(head).to_bytes(4, "big") + head + zstandard.ZstdCompressor().compress(b"m")
    assert frames.unpack(data, MailReceived)[1] == b"m"


@pytest.mark.parametrize("data", [
    b"",
    b"garbage that is long enough",
    frames.MAGIC,
    frames.MAGIC + (10**9).to_bytes(4, "big") + b"{}",
    frames.MAGIC + (2).to_bytes(4, "big") + b"{}",  # header misses required fields
])
def test_malformed_frames_raise_frame_error(data: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.unpack(data, MailReceived)


def test_corrupt_body_raises_frame_error() -> None:
    data = frames.pack(envelope(), b"hello world" * 100)
    with pytest.raises(frames.FrameError):
        frames.unpack(data[:-20] + b"\x00" * 20, MailReceived)


def test_decompression_bomb_is_bounded() -> None:
    data = frames.pack(envelope(), b"\0" * (5 * 1024 * 1024))
    with pytest.raises(frames.FrameError):
        frames.unpack(data, MailReceived, max_raw_bytes=1024 * 1024)
