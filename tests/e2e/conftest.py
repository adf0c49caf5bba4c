"""The whole gateway as separate processes on real components, on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgw_devstack.stack import Stack, StackPorts

E2E_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
E2E_REPORT_SECRET = "e2e-only-secret-of-the-report-links"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    gateway = Stack(state=state, ports=StackPorts.free(), extra_env={
        "ingress": {"MAILGW_MAX_MESSAGE_BYTES": str(E2E_MAX_MESSAGE_BYTES)},
        "rules": {"MAILGW_RULES_DEADLINE_S": "45"},
        "delivery": {"MAILGW_DELIVERY_RETRY_DELAYS_S": "[2, 5]"},
        # Spam reports with signed links (sent on demand by the tests: `mailgw quarantine report`).
        "reporting": {"MAILGW_REPORTING_REPORT_SECRET": E2E_REPORT_SECRET},
    })
    try:
        gateway.start()
    except Exception:
        dump_logs(state)
        gateway.stop()
        raise
    yield gateway
    gateway.stop()
    if getattr(sys, "last_value", None) is not None:
        dump_logs(state)


def dump_logs(state: Path) -> None:
    for log in sorted((state / "logs").glob("*.log")):
        print(f"===== {log.name} =====\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
