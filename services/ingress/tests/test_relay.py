import pytest

from mailgw_ingress.relay import RelayPolicy
from mailgw_libs.events import Direction

POLICY = RelayPolicy(["example.com", "Example.NET."], ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"])
INTERNET = "198.51.100.7"


@pytest.mark.parametrize("rcpt", ["a@example.com", "A@EXAMPLE.COM", "a@example.com.", "a.b+c@example.net"])
def test_relay_domains_accepted_from_internet(rcpt: str) -> None:
    decision = POLICY.check_recipient(INTERNET, rcpt)
    assert decision.allowed and decision.direction is Direction.INBOUND


@pytest.mark.parametrize("rcpt", [
    "victim@other.org",
    "victim%other.org@example.com",         # %-hack
    "other.org!victim@example.com",          # bang path
    "@example.com:victim@other.org",         # source route
    "victim@[192.0.2.1]",                    # IP literal
    '"victim@other.org"@example.com',        # quoted local part with @
    "victim@other.org@example.com",          # two @
    "victim@example.com.other.org",          # suffix trick
    "victim@sub.example.com",                # subdomain is not the relay domain
    "victim@example..com",
    "",
    "nodomain",
])
def test_relay_tricks_refused_from_internet(rcpt: str) -> None:
    assert not POLICY.check_recipient(INTERNET, rcpt).allowed


@pytest.mark.parametrize("client", ["127.0.0.1", "10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"])
def test_trusted_networks_relay_outbound(client: str) -> None:
    decision = POLICY.check_recipient(client, "someone@other.org")
    assert decision.allowed and decision.direction is Direction.OUTBOUND


def test_trusted_client_still_cannot_use_routing_tricks() -> None:
    assert not POLICY.check_recipient("127.0.0.1", "victim%other.org@example.com").allowed


def test_loopback_other_than_127_0_0_1_is_internet() -> None:
    assert POLICY.direction("127.0.0.2") is Direction.INBOUND
    assert not POLICY.check_recipient("127.0.0.2", "x@other.org").allowed
    assert not POLICY.check_recipient("garbage", "x@other.org").allowed
