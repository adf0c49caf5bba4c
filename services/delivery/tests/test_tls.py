"""TLS policy matrix (none / may / encrypt / verify) against real aiosmtpd sinks, with and without
STARTTLS, using a self-signed certificate generated here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailgw_delivery.relay import SmtpRelay, TlsPolicy, Transaction
from mailgw_libs.events import DeliveryStatus

from .conftest import SinkFactory
from .support import RAW

HOST_NAME = "mx.tls.test"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), HOST_NAME)


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


# (policy, sink offers STARTTLS, CA file given, name checked) -> (status, arrived over TLS)
MATRIX = [
    ("none", True, False, HOST_NAME, DeliveryStatus.DELIVERED, False),
    ("may", True, False, HOST_NAME, DeliveryStatus.DELIVERED, True),
    ("may", False, False, HOST_NAME, DeliveryStatus.DELIVERED, False),
    ("encrypt", True, False, "any.name", DeliveryStatus.DELIVERED, True),  # self-signed, no check: fine
    ("encrypt", False, False, HOST_NAME, DeliveryStatus.DEFERRED, False),
    ("verify", True, True, HOST_NAME, DeliveryStatus.DELIVERED, True),
    ("verify", True, True, "other.tls.test", DeliveryStatus.DEFERRED, False),  # name mismatch
    ("verify", True, False, HOST_NAME, DeliveryStatus.DEFERRED, False),  # not in the system store
    ("verify", False, True, HOST_NAME, DeliveryStatus.DEFERRED, False),  # no STARTTLS at all
]


@pytest.mark.parametrize(("policy", "offer", "with_ca", "name", "status", "over_tls"), MATRIX)
async def test_tls_policy_matrix(sinks: SinkFactory, certificate: tuple[Path, Path], policy: TlsPolicy, offer: bool,
                                 with_ca: bool, name: str, status: DeliveryStatus, over_tls: bool) -> None:
    sink = sinks(tls_context=server_context(certificate) if offer else None)
    relay = SmtpRelay("127.0.0.1", sink.port, "delivery.test", connect_timeout_s=2.0, command_timeout_s=5.0,
                      tls=policy, ca_file=str(certificate[0]) if with_ca else "", tls_name=name)
    [[outcome]] = await relay.deliver([Transaction("s@x.test", ("r@y.test",), RAW)])
    await relay.close()
    assert outcome.status is status, outcome
    if status is DeliveryStatus.DELIVERED:
        [received] = sink.handler.received
        assert received.tls is over_tls and received.content == RAW
    else:
        assert outcome.session and sink.handler.received == []


async def test_may_falls_back_to_clear_text_when_the_handshake_fails(
        sinks: SinkFactory, certificate: tuple[Path, Path]) -> None:
    broken = server_context(certificate)
    broken.maximum_version = ssl.TLSVersion.TLSv1_2
    broken.set_ciphers("PSK")  # no cipher the client offers: every handshake fails
    sink = sinks(tls_context=broken)
    relay = SmtpRelay("127.0.0.1", sink.port, "delivery.test", connect_timeout_s=2.0, command_timeout_s=5.0, tls="may")
    [[outcome]] = await relay.deliver([Transaction("s@x.test", ("r@y.test",), RAW)])
    assert outcome.status is DeliveryStatus.DELIVERED
    assert [r.tls for r in sink.handler.received] == [False]
    strict = SmtpRelay("127.0.0.1", sink.port, "delivery.test", connect_timeout_s=2.0, command_timeout_s=5.0,
                       tls="encrypt")
    [[outcome]] = await strict.deliver([Transaction("s@x.test", ("r@y.test",), RAW)])
    assert outcome.status is DeliveryStatus.DEFERRED
