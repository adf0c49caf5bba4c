"""Network checks against the real local DNS server (NSD): DNSBL/DNSWL on the first untrusted relay,
URIBL on link domains; and the service publishing them with Authentication-Results."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import dkim
import dns.asyncresolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgw_antispam.app import build
from mailgw_antispam.network import NamedList, NetworkChecker, first_untrusted_relay, parse_networks, uri_domains
from mailgw_antispam.settings import AntispamSettings, DnsListSetting
from mailgw_devstack.dnsserver import LocalDns, txt
from mailgw_devstack.testing import collect, produce, running
from mailgw_libs import cli, frames, topics
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.events import Direction, MailReceived, Verdict

TRUSTED = parse_networks(["127.0.0.0/8", "203.0.113.0/24"])
CHAIN = [
    "from mx.ours.example (mx.ours.example [203.0.113.5]) by gw.ours.example; Mon, 2 Feb 2026 10:00:02 +0000",
    "from bad.example (dsl-1.isp.example [198.51.100.7]) by mx.ours.example; Mon, 2 Feb 2026 10:00:01 +0000",
    "from pc (unknown [192.0.2.99]) by bad.example; Mon, 2 Feb 2026 10:00:00 +0000",
]


def resolver(server: LocalDns) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [server.host]
    r.port = server.port
    r.lifetime = 3.0
    return r


def test_first_untrusted_relay() -> None:
    assert first_untrusted_relay(CHAIN, TRUSTED) == "198.51.100.7"
    # the connecting client, when it is untrusted, is the first hop
    assert first_untrusted_relay(CHAIN, TRUSTED, client_ip="198.51.100.9") == "198.51.100.9"
    assert first_untrusted_relay(CHAIN, TRUSTED, client_ip="203.0.113.9") == "198.51.100.7"
    # a private first untrusted hop is not looked up anywhere
    assert first_untrusted_relay(["from x (y [10.1.2.3]) by z"], TRUSTED) == ""
    assert first_untrusted_relay([], TRUSTED) == ""


@pytest.mark.parametrize("received", [
    ["from x ([999.1.2.3]) by y"], ["from x ([::::::]) by y"], ["(" * 10_000], ["from [" + "1." * 5000 + "] by y"],
    ["from x ([198.51.100.7]" + " " * 100_000],
])
def test_hostile_received_headers(received: list[str]) -> None:
    assert first_untrusted_relay(received, TRUSTED) in ("", "198.51.100.7")


def test_uri_domains_are_registered_domains() -> None:
    raw = (b"Content-Type: text/html\r\n\r\n<a href='http://a.b.shop.example.co.uk/x'>x</a> http://www.shop.example.co.uk/ "
           b"https://other.example.org/p http://192.0.2.5/")
    assert uri_domains(raw) == ["example.co.uk", "example.org"]  # IP links are not domain-list queries


async def test_dns_lists_against_local_server(dns_server: LocalDns, unique: str) -> None:
    bl, wl, ubl = f"bl{unique}.test", f"wl{unique}.test", f"ubl{unique}.test"
    dns_server.set_zone(bl, ["7.100.51.198 IN A 127.0.0.2", "8.100.51.198 IN A 127.255.255.254"])
    dns_server.set_zone(wl, ["7.100.51.198 IN A 127.0.10.1"])
    dns_server.set_zone(ubl, ["spammy.example IN A 127.0.1.2", "harmless.example IN A 127.0.1.99"])
    dns_server.apply()
    checker = DnsListChecker(resolver(dns_server), None, timeout=2.0)
    net = NetworkChecker(checker,
                         [NamedList("RBL_TEST", DnsList(bl, 3.0)), NamedList("RCVD_IN_DNSWL_TEST", DnsList(wl, -1.0))],
                         [NamedList("URIBL_TEST", DnsList(ubl, 2.5, "domain", frozenset({"127.0.1.2"})))], TRUSTED)
    raw = b"Content-Type: text/plain\r\n\r\nsee http://www.spammy.example/buy and http://harmless.example/\r\n"
    hits = {h.name: h for h in await net.check(raw, CHAIN)}
    assert set(hits) == {"RBL_TEST", "RCVD_IN_DNSWL_TEST", "URIBL_TEST"}
    assert hits["RBL_TEST"].score == 3.0 and hits["RCVD_IN_DNSWL_TEST"].score == -1.0
    assert "spammy.example" in hits["URIBL_TEST"].detail
    # not listed, and a list refusing the query (127.255.255.x) is no listing
    assert await net.check(b"\r\nno links\r\n", [], client_ip="198.51.100.1") == []
    assert await net.check(b"\r\nno links\r\n", [], client_ip="198.51.100.8") == []


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


async def test_service_publishes_auth_and_list_symbols(fresh_kafka: str, dns_server: LocalDns, unique: str) -> None:
    zone, bl, ubl = f"svc{unique}.test", f"sbl{unique}.test", f"subl{unique}.test"
    private, public = _key()
    dns_server.set_zone(zone, [f"sel._domainkey IN TXT {txt(public)}", f"_dmarc IN TXT {txt('v=DMARC1; p=reject')}"])
    dns_server.set_zone(bl, ["7.100.51.198 IN A 127.0.0.2"])
    dns_server.set_zone(ubl, ["spammy.example IN A 127.0.0.2"])
    dns_server.apply()
    body = (f"From: a@{zone}\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <x@{zone}>\r\n\r\n"
            "Visit http://spammy.example/ today.\r\n").encode()
    raw = dkim.sign(body, b"sel", zone.encode(), private, include_headers=[b"from", b"to", b"subject"]) + body
    settings = AntispamSettings(kafka_bootstrap=fresh_kafka, http_port=0, bayes=False, network_checks=True,
                                dns_nameservers=[dns_server.host], dns_port=dns_server.port, dns_timeout=3.0,
                                redis_url="redis://127.0.0.1:1/0",  # no Redis: the DNS cache is skipped
                                dnsbl_lists=[DnsListSetting(symbol="RBL_T", zone=bl, weight=2.0)], dnswl_lists=[],
                                uribl_lists=[DnsListSetting(symbol="URIBL_T", zone=ubl, weight=2.0)])
    env = MailReceived(message_id="N1", received_at=datetime.now(UTC), client_ip="198.51.100.7", mail_from=f"a@{zone}",
                       rcpt_tos=["b@example.com"], direction=Direction.INBOUND, size=len(raw), spf="pass",
                       spf_domain=zone)
    async with running(build(settings)):
        await produce(fresh_kafka, topics.MAIL_RECEIVED, "N1", frames.pack(env, raw))
        records = await collect(fresh_kafka, topics.MAIL_VERDICTS, 1, key="N1")
    verdict = Verdict.model_validate_json(records[0].value)
    found = {h.name for h in verdict.symbols}
    assert {"DKIM_VALID", "DKIM_VALID_AU", "SPF_PASS", "DMARC_PASS", "RBL_T", "URIBL_T"} <= found
    [header] = verdict.add_headers
    assert header.name == "Authentication-Results"
    assert header.value.startswith(f"mailgw; dkim=pass header.d={zone}") and "dmarc=pass" in header.value


def test_scan_cli_runs_dns_checks_only_with_network(dns_server: LocalDns, unique: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    zone, ubl = f"cli{unique}.test", f"cubl{unique}.test"
    private, public = _key()
    dns_server.set_zone(zone, [f"sel._domainkey IN TXT {txt(public)}", f"_dmarc IN TXT {txt('v=DMARC1; p=none')}"])
    dns_server.set_zone(ubl, ["spammy.example IN A 127.0.0.2"])
    dns_server.apply()
    body = (f"From: a@{zone}\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nsee http://spammy.example/\r\n").encode()
    path = tmp_path / "m.eml"
    path.write_bytes(dkim.sign(body, b"sel", zone.encode(), private, include_headers=[b"from", b"subject"]) + body)
    monkeypatch.setenv("MAILGW_DNS_NAMESERVERS", json.dumps([dns_server.host]))
    monkeypatch.setenv("MAILGW_DNS_PORT", str(dns_server.port))
    monkeypatch.setenv("MAILGW_ANTISPAM_URIBL_LISTS", json.dumps([{"symbol": "URIBL_T", "zone": ubl, "weight": 2}]))
    monkeypatch.setenv("MAILGW_ANTISPAM_DNSBL_LISTS", "[]")
    monkeypatch.setenv("MAILGW_ANTISPAM_DNSWL_LISTS", "[]")
    cli.main(["scan", "--json", str(path)])
    offline = {s["name"] for s in json.loads(capsys.readouterr().out)["symbols"]}
    assert not offline & {"DKIM_VALID", "URIBL_T"}
    cli.main(["scan", "--json", "--network", str(path)])
    online = {s["name"] for s in json.loads(capsys.readouterr().out)["symbols"]}
    assert {"DKIM_VALID", "DKIM_VALID_AU", "DMARC_PASS", "URIBL_T"} <= online


def test_uri_domains_of_hostile_links() -> None:
    links = b" ".join([b"http://" + b"a" * 300 + b".example.com/", b"http://xn--" + b"z" * 80 + b".com/",
                       b"http://[::1/", b"http://%%%/", b"http://" + b"a." * 200 + b"example.org/"]
                      + [b"http://h%d.example%d.net/" % (i, i) for i in range(500)])
    domains = uri_domains(b"Content-Type: text/plain\r\n\r\n" + links)
    assert len(domains) <= 20 and all(len(d) <= 253 for d in domains)
