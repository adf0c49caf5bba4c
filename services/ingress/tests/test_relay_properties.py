"""Property tests of the address parser and relay decision: never raise, never relay for an untrusted client."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw_ingress.relay import RelayPolicy, normalise_domain

POLICY = RelayPolicy(["example.com", "example.net"], ["127.0.0.1/32", "10.0.0.0/8"])
RELAY = {"example.com", "example.net"}

# Characters a relay trick is built from, plus the whole of Unicode (surrogates included: aiosmtpd hands
# non-UTF-8 bytes over as surrogate escapes).
tricky = st.sampled_from([*"@%!:,[]\\\"'<>() ;.\t\r\n\x00", "example.com", "other.org", "EXAMPLE.COM"])
any_text = st.text(st.characters(exclude_categories=[]))
addresses = st.one_of(
    any_text,
    st.lists(st.one_of(tricky, st.text(max_size=5)), max_size=12).map("".join),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=20), st.text(max_size=20)),
)
clients = st.one_of(st.sampled_from(["198.51.100.7", "127.0.0.2", "::1", "2001:db8::1", "garbage", ""]),
                    st.ip_addresses().map(str), st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(address=addresses)
def test_split_address_never_raises_and_returns_a_plain_address(address: str) -> None:
    parts = RelayPolicy.split_address(address)
    if parts is not None:
        local, domain = parts
        assert local and domain and "@" not in local + domain
        assert domain == normalise_domain(domain)


@settings(max_examples=400, deadline=None)
@given(client=clients, rcpt=addresses)
def test_untrusted_client_never_relays_to_a_foreign_domain(client: str, rcpt: str) -> None:
    decision = POLICY.check_recipient(client, rcpt)
    if POLICY.is_trusted(client):
        return
    if decision.allowed:
        parts = RelayPolicy.split_address(rcpt)
        assert parts is not None and parts[1] in RELAY
        assert rcpt.count("@") == 1 and not set("%!:[]\"") & set(rcpt)


@settings(max_examples=300, deadline=None)
@given(local=st.text(min_size=1, max_size=30), domain=st.sampled_from(["other.org", "example.com.evil.test",
                                                                        "sub.example.com", "[192.0.2.1]"]))
def test_foreign_domains_refused_from_the_internet(local: str, domain: str) -> None:
    assert not POLICY.check_recipient("198.51.100.7", f"{local}@{domain}").allowed
