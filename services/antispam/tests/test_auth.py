"""DKIM, DMARC and ARC against the real local DNS server (NSD, devstack `dns_server`): keys generated in
the test, signed by dkimpy, published in a zone of the test's own."""

from __future__ import annotations

import base64

import dkim
import dns.asyncresolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgw_antispam.auth import Authenticator, AuthResult, aligned, parse_dmarc, tags
from mailgw_devstack.dnsserver import LocalDns, txt


def new_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


def message(from_domain: str, body: bytes = b"Hello, this is a signed message.\r\n") -> bytes:
    return (f"From: Alice <alice@{from_domain}>\r\nTo: bob@example.com\r\nSubject: signed\r\n"
            f"Date: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <m1@{from_domain}>\r\n\r\n").encode() + body


def sign(raw: bytes, domain: str, private: bytes, selector: str = "sel") -> bytes:
    signature = dkim.sign(raw, selector.encode(), domain.encode(), private,
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + raw


@pytest.fixture
def zone(dns_server: LocalDns, unique: str) -> str:
    return f"auth{unique}.test"


def resolver(server: LocalDns) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.lifetime = 3.0
    return r


def names(result: AuthResult) -> set[str]:
    return {h.name for h in result.hits}


def test_tag_and_record_parsing() -> None:
    assert tags("v=1; d=example.org;\r\n s=sel; b=abc\r\n def") == {"v": "1", "d": "example.org", "s": "sel",
                                                                     "b": "abcdef"}
    record = parse_dmarc("v=DMARC1; p=reject; sp=quarantine; pct=50; adkim=s")
    assert record is not None and (record.policy, record.subdomain_policy, record.pct, record.adkim) == (
        "reject", "quarantine", 50, "s")
    assert parse_dmarc("v=spf1 -all") is None
    assert parse_dmarc("v=DMARC1; p=bogus").policy == "none"  # type: ignore[union-attr]
    assert aligned("mail.example.co.uk", "example.co.uk", "r")
    assert not aligned("mail.example.co.uk", "example.co.uk", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")


async def test_dkim_valid_and_dmarc_pass(dns_server: LocalDns, zone: str) -> None:
    private, public = new_key()
    dns_server.set_zone(zone, [f"sel._domainkey IN TXT {txt(public)}", f"_dmarc IN TXT {txt('v=DMARC1; p=reject')}"])
    dns_server.apply()
    auth = Authenticator(resolver(dns_server), "gw.test")
    result = await auth.check(sign(message(zone), zone, private))
    assert {"DKIM_VALID", "DKIM_VALID_AU", "DMARC_PASS"} <= names(result)
    assert result.header.startswith("gw.test; dkim=pass header.d=" + zone)
    assert "dmarc=pass" in result.header


async def test_tampered_body_fails_dkim_and_dmarc_reject(dns_server: LocalDns, zone: str) -> None:
    private, public = new_key()
    dns_server.set_zone(zone, [f"sel._domainkey IN TXT {txt(public)}", f"_dmarc IN TXT {txt('v=DMARC1; p=reject')}"])
    dns_server.apply()
    signed = sign(message(zone), zone, private).replace(b"signed message", b"forged message")
    result = await Authenticator(resolver(dns_server)).check(signed, spf="fail", spf_domain=zone)
    assert {"DKIM_INVALID", "DMARC_REJECT", "SPF_FAIL"} <= names(result)
    assert "DKIM_VALID" not in names(result)
    assert "dmarc=fail (p=reject)" in result.header


@pytest.mark.parametrize(("record", "symbol"), [
    ("v=DMARC1; p=quarantine", "DMARC_QUARANTINE"),
    ("v=DMARC1; p=none", "DMARC_NONE"),
    ("v=DMARC1; p=reject; pct=0", "DMARC_QUARANTINE"),  # outside pct: the next weaker policy
])
async def test_dmarc_policies(dns_server: LocalDns, zone: str, record: str, symbol: str) -> None:
    dns_server.set_zone(zone, [f"_dmarc IN TXT {txt(record)}"])
    dns_server.apply()
    result = await Authenticator(resolver(dns_server)).check(message(zone), spf="pass", spf_domain="other.example")
    assert symbol in names(result)


async def test_dmarc_subdomain_policy_and_spf_alignment(dns_server: LocalDns, zone: str) -> None:
    dns_server.set_zone(zone, [f"_dmarc IN TXT {txt('v=DMARC1; p=none; sp=reject; aspf=s')}"])
    dns_server.apply()
    auth = Authenticator(resolver(dns_server))
    sub = f"news.{zone}"
    # no record at the subdomain: the organisational domain's sp applies
    assert "DMARC_REJECT" in names(await auth.check(message(sub), spf="fail", spf_domain=sub))
    # relaxed SPF would align, strict (aspf=s) does not
    assert "DMARC_REJECT" in names(await auth.check(message(sub), spf="pass", spf_domain=zone))
    assert "DMARC_PASS" in names(await auth.check(message(sub), spf="pass", spf_domain=sub))


async def test_signature_of_another_domain_does_not_align(dns_server: LocalDns, zone: str) -> None:
    private, public = new_key()
    other = f"signer.{zone}x"
    dns_server.set_zone(other, [f"sel._domainkey IN TXT {txt(public)}"])
    dns_server.set_zone(zone, [f"_dmarc IN TXT {txt('v=DMARC1; p=reject')}"])
    dns_server.apply()
    result = await Authenticator(resolver(dns_server)).check(sign(message(zone), other, private))
    assert "DKIM_VALID" in names(result) and "DKIM_VALID_AU" not in names(result)
    assert "DMARC_REJECT" in names(result)


async def test_all_signatures_checked_and_missing_key(dns_server: LocalDns, zone: str) -> None:
    private, public = new_key()
    dns_server.set_zone(zone, [f"sel._domainkey IN TXT {txt(public)}"])
    dns_server.apply()
    raw = sign(message(zone), zone, private)
    raw = sign(raw, zone, private, selector="gone")  # a second signature whose key is not published
    result = await Authenticator(resolver(dns_server)).check(raw)
    # the newest signature (on top, selector "gone") has no key; the first one still verifies
    assert [(r.selector, r.result) for r in result.dkim] == [("gone", "fail"), ("sel", "pass")]
    assert {"DKIM_VALID", "DKIM_INVALID"} <= names(result)


async def test_arc_chain_verified(dns_server: LocalDns, zone: str) -> None:
    private, public = new_key()
    dns_server.set_zone(zone, [f"arc._domainkey IN TXT {txt(public)}"])
    dns_server.apply()
    raw = message("sender.example").replace(
        b"\r\n\r\n", f"\r\nAuthentication-Results: {zone}; spf=pass smtp.mailfrom=sender.example\r\n\r\n".encode(), 1)
    arc_headers = dkim.arc_sign(raw, b"arc", zone.encode(), private, zone.encode(),
                                include_headers=[b"from", b"to", b"subject", b"date"])
    sealed = b"".join(arc_headers) + raw
    result = await Authenticator(resolver(dns_server)).check(sealed)
    assert result.arc == "pass" and "ARC_VALID" in names(result)
    broken = sealed.replace(b"signed message", b"changed message")
    result = await Authenticator(resolver(dns_server)).check(broken)
    assert result.arc == "fail" and "ARC_INVALID" in names(result)


async def test_unreachable_dns_is_temperror_not_pass() -> None:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = 9  # nothing answers
    r.lifetime = 0.5
    private, _ = new_key()
    result = await Authenticator(r).check(sign(message("example.org"), "example.org", private))
    assert [d.result for d in result.dkim] == ["temperror"]
    assert "DKIM_VALID" not in names(result) and "DMARC_REJECT" not in names(result)


@pytest.mark.parametrize("raw", [
    b"",
    b"DKIM-Signature: garbage\r\n\r\nbody",
    b"DKIM-Signature: v=1; d=..; s=\x00; b=\r\nFrom: a@b\r\n\r\nx",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s; h=from; bh=AAAA; b=" + b"A" * 100_000 + b"\r\n\r\nx",
    b"From: a@example.org\r\nFrom: b@example.net\r\n\r\nx",
    b"".join(b"DKIM-Signature: v=1; d=e%d.example; s=s; b=x\r\n" % i for i in range(500)) + b"\r\nx",
])
async def test_hostile_signatures(raw: bytes) -> None:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = 9
    r.lifetime = 0.2
    result = await Authenticator(r).check(raw)
    assert result.header.startswith("mailgw;")
    assert len(result.dkim) <= 8


@pytest.mark.parametrize("record", [
    "", "v=DMARC1", "v=DMARC1;" * 10_000, "v=DMARC1; p=" + "x" * 100_000, "v=DMARC1; pct=-5; p=reject",
    "v=DMARC1; pct=999999999999999999999; p=quarantine", "\x00v=DMARC1; p=reject", "v = DMARC1 ; p = reject ;;;",
])
def test_hostile_dmarc_records(record: str) -> None:
    parsed = parse_dmarc(record)
    assert parsed is None or (parsed.policy in ("none", "quarantine", "reject") and 0 <= parsed.pct <= 100)


async def test_dmarc_with_several_records_is_none(dns_server: LocalDns, zone: str) -> None:
    dns_server.set_zone(zone, [f"_dmarc IN TXT {txt('v=DMARC1; p=reject')}",
                               f"_dmarc IN TXT {txt('v=DMARC1; p=none')}"])
    dns_server.apply()
    result = await Authenticator(resolver(dns_server)).check(message(zone))
    assert result.dmarc == "none" and "DMARC_REJECT" not in names(result)  # RFC 7489: more than one record
