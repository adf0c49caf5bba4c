"""The running antivirus service applies scoring.symbol_scores / scoring.virus_symbols published to mailgw.config."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from mailgw_antivirus.app import build
from mailgw_antivirus.settings import AntivirusSettings
from mailgw_devstack.infra import Managed, free_port
from mailgw_devstack.testing import publish_config
from mailgw_libs import topics
from mailgw_libs.config.model import GatewayConfig, Scoring
from mailgw_libs.events import Verdict


def pe() -> bytes:
    """A minimal PE: MZ header whose e_lfanew (0x3C) points at 'PE\\0\\0' and a COFF header."""
    head = bytearray(b"MZ" + b"\0" * 0x3E)
    struct.pack_into("<I", head, 0x3C, 0x40)
    return bytes(head) + b"PE\0\0" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102) + b"\0" * 256


async def test_published_scores_and_virus_symbols_apply_live(
        fresh_kafka: str, clamd: Managed, kafka_bus: Any, redis_url: str, unique: str, mail: Callable[..., bytes],
        started: Callable[[Any], Awaitable[None]]) -> None:
    # The environment's values apply while mailgw.config holds no version.
    settings = AntivirusSettings(kafka_bootstrap=fresh_kafka, clamd_port=clamd.port, http_port=free_port(),
                                 redis_url=redis_url, cache_prefix=f"test:{unique}:",
                                 symbol_scores={"MIME_BAD_EXTENSION": 1.5})
    program = mail(attachments=(("run.exe", "application/octet-stream", pe()),))
    runtime = build(settings)
    async with runtime.lifespan(runtime.app()):
        await started(runtime)

        async def scan() -> Verdict:
            message_id = await kafka_bus.send_mail(program)
            return Verdict.model_validate_json((await kafka_bus.read(topics.MAIL_VERDICTS, message_id)).value)

        before = await scan()
        assert {h.name: h.score for h in before.symbols} == {"MIME_EXECUTABLE": 5.0, "MIME_BAD_EXTENSION": 1.5}
        assert before.viruses == []

        config = GatewayConfig(scoring=Scoring(symbol_scores={"MIME_BAD_EXTENSION": 9.0},
                                               virus_symbols=["MIME_EXECUTABLE"]))
        await publish_config(runtime, config, expected_version=0, comment="executables are viruses")

        # The same message again: the verdict cached under the old configuration is not served.
        after = await scan()
        assert {h.name: h.score for h in after.symbols} == {"MIME_EXECUTABLE": 1000.0, "MIME_BAD_EXTENSION": 9.0}
        assert after.viruses == ["Mailgw.MIME_EXECUTABLE"]
