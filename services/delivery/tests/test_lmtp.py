"""The LMTP reply collector: replies split anywhere, multi-line, garbled, oversized, or missing."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib import SMTPResponseException, SMTPServerDisconnected, SMTPTimeoutError

from mailgw_delivery.lmtp import ReplyCollector


async def test_replies_split_across_segments_and_multi_line() -> None:
    collector = ReplyCollector(3)
    stream = b"250 2.1.5 ok\r\n452-4.2.2 mailbox\r\n452 4.2.2 full\r\n550 5.1.1 no such user\r\n"
    for i in range(0, len(stream), 7):
        collector.feed(stream[i:i + 7])
    replies = await collector.replies(1.0)
    assert [(r.code, r.message) for r in replies] == [(250, "2.1.5 ok"), (452, "4.2.2 mailbox\n4.2.2 full"),
                                                      (550, "5.1.1 no such user")]


async def test_bytes_after_the_expected_replies_are_left_alone() -> None:
    collector = ReplyCollector(1)
    collector.feed(b"250 ok\r\n250 extra\r\n")
    assert [r.code for r in await collector.replies(1.0)] == [250]


@pytest.mark.parametrize("garbage", [b"hello there\r\n", b"\xff\xfe\r\n", b"25\r\n"])
async def test_garbled_reply_raises(garbage: bytes) -> None:
    collector = ReplyCollector(2)
    collector.feed(b"250 ok\r\n" + garbage)
    with pytest.raises(SMTPResponseException):
        await collector.replies(1.0)


async def test_oversized_reply_raises() -> None:
    collector = ReplyCollector(1, max_bytes=1024)
    collector.feed(b"250-" + b"x" * 2000)
    with pytest.raises(SMTPResponseException):
        await collector.replies(1.0)


async def test_silence_times_out_and_a_hang_up_fails() -> None:
    collector = ReplyCollector(2)
    collector.feed(b"250 ok\r\n")
    with pytest.raises(SMTPTimeoutError):
        await collector.replies(0.2)
    lost = ReplyCollector(1)
    asyncio.get_running_loop().call_later(0.05, lost.fail, SMTPServerDisconnected("gone"))
    with pytest.raises(SMTPServerDisconnected):
        await lost.replies(5.0)
