"""A service killed (SIGKILL) while mail is in flight: nothing accepted is lost, nothing is delivered twice."""

from __future__ import annotations

import time

import pytest

from mailgw_devstack.stack import Stack

from .mail import delivered, ham, send_sync, token, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("victim", ["delivery", "rules", "antispam"])
def test_mail_survives_a_killed_service(stack: Stack, victim: str) -> None:
    stack.services[victim].kill()
    markers = [token() for _ in range(3)]
    for marker in markers:
        code, _ = send_sync(stack.ports.smtp, ham(f"Recovery {victim} {marker}"))
        assert code == 250
    # Nothing can be delivered while a stage on the way is down (antispam is awaited until the deadline).
    if victim != "antispam":
        assert not any(delivered(stack.delivered_dir, m) for m in markers)
    stack.start_service(victim)
    stack.wait_ready((victim,), timeout=120)
    for marker in markers:
        copies = wait_for(lambda m=marker: delivered(stack.delivered_dir, m), timeout=120)
        assert copies, (victim, marker)
    time.sleep(2)  # a redelivered action would show up as a second copy by now
    for marker in markers:
        assert len(delivered(stack.delivered_dir, marker)) == 1, (victim, marker)
