"""Kafka down: ingress answers 451 (the sender keeps the message) and recovers when the bus is back."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from mailgw_devstack.infra import free_port, spawn, start_tansu, wait_port

from .mail import ham, send_sync, token

pytestmark = pytest.mark.e2e


def test_bus_outage_gives_451_not_250(tmp_path: Path) -> None:
    kafka_port = free_port()
    broker = start_tansu(tmp_path, kafka_port)
    smtp_port, http_port = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin", "MAILGW_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "MAILGW_INGRESS_SMTP_PORT": str(smtp_port), "MAILGW_INGRESS_HTTP_PORT": str(http_port),
        "MAILGW_INGRESS_RELAY_DOMAINS": json.dumps(["example.com"]), "MAILGW_PUBLISH_TIMEOUT_S": "3",
        "MAILGW_INGRESS_GREYLISTING": "false", "MAILGW_INGRESS_PREGREET_DELAY_S": "0",
    }
    ingress = spawn("ingress", [sys.executable, "-m", "mailgw_ingress"], tmp_path / "ingress.log", env=env)
    try:
        wait_port(smtp_port, 30, ingress, "ingress")
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{http_port}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        code, _ = send_sync(smtp_port, ham(f"before {token()}"))
        assert code == 250

        broker.kill()
        import aiosmtplib

        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            send_sync(smtp_port, ham(f"during {token()}"))
        assert err.value.code == 451 and "4.3.0" in err.value.message

        # The broker comes back on the same port: mail is accepted again without restarting ingress.
        broker = start_tansu(tmp_path / "again", kafka_port)
        wait_port(kafka_port, 10)
        deadline = time.monotonic() + 60
        code = 0
        while time.monotonic() < deadline:
            try:
                code, _ = send_sync(smtp_port, ham(f"after {token()}"))
                break
            except aiosmtplib.SMTPDataError:
                time.sleep(1)
        assert code == 250
    finally:
        ingress.terminate()
        ingress.wait(15)
        broker.stop()
