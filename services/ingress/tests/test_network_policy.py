"""DNS-based checks over real SMTP sessions against a real DNS server (NSD) and Redis.

DNSBL at connection time, SPF at MAIL FROM, unknown sender domain, HELO and reverse DNS checks. Internet
clients bind 127.0.0.2 (127.0.0.1 is the trusted network); each test serves zones of its own (`unique`).
"""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
import redis.asyncio as aioredis

from mailgw_devstack.dnsserver import LocalDns
from mailgw_devstack.infra import free_port
from mailgw_ingress.dnsbl import ConnectionDnsbl
from mailgw_ingress.greylist import GreylistPolicy
from mailgw_ingress.hostchecks import HostChecks, RdnsMode, valid_hostname
from mailgw_ingress.spfcheck import SpfChecker
from mailgw_libs.dnslists import DnsList, DnsListChecker
from mailgw_libs.resolver import make_resolver

from .conftest import MakeGateway

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


async def session(port: int, helo: str = "client.test", source: str = "127.0.0.2") -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(source, 0), start_tls=False,
                           local_hostname=helo, timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def banner(port: int, source: str = "127.0.0.2") -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return (await asyncio.wait_for(reader.readline(), 10)).decode().strip()
    finally:
        writer.close()


def host_checks(dns_server: LocalDns, **kw: object) -> HostChecks:
    resolver = make_resolver([dns_server.host], dns_server.port, 2.0)
    return HostChecks(resolver, own_names=["mx.test"], own_ips=["127.0.0.1"], **kw)  # type: ignore[arg-type]


def spf_checker(dns_server: LocalDns) -> SpfChecker:
    return SpfChecker([dns_server.host], dns_server.port, 2.0, "mx.test")


# --- DNSBL ------------------------------------------------------------------------------------------

async def test_dnsbl_weights_threshold_and_allowlist(gateway: MakeGateway, dns_server: LocalDns, unique: str,
                                                     redis_client: aioredis.Redis) -> None:
    heavy, light, allow = f"heavy-{unique}.test", f"light-{unique}.test", f"allow-{unique}.test"
    dns_server.set_zone(heavy, ["3.0.0.127 IN A 127.0.0.2"])
    dns_server.set_zone(light, ["2.0.0.127 IN A 127.0.0.2", "3.0.0.127 IN A 127.0.0.2", "4.0.0.127 IN A 127.0.0.2"])
    dns_server.set_zone(allow, ["4.0.0.127 IN A 127.0.0.2"])
    dns_server.apply()
    checker = DnsListChecker(make_resolver([dns_server.host], dns_server.port, 2.0), redis_client,
                             prefix=f"t{unique}:")
    lists = [DnsList(heavy, 2.0), DnsList(light, 1.0), DnsList(allow, -3.0)]
    gw = await gateway(dnsbl=ConnectionDnsbl(checker, lists, threshold=2.0))
    # 127.0.0.2: light only (1 < 2): accepted.
    smtp = await session(gw.port, source="127.0.0.2")
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    # 127.0.0.3: heavy + light = 3: refused before the banner, naming the heaviest list.
    assert await banner(gw.port, "127.0.0.3") == \
        f"554 5.7.1 Service unavailable; client host [127.0.0.3] blocked using {heavy}"
    event = gw.events[-1]
    assert (event.check, event.code, event.client_ip) == ("dnsbl", 554, "127.0.0.3")
    assert heavy in event.reason and light in event.reason
    # 127.0.0.4: light + allowlist = -2: accepted.
    smtp = await session(gw.port, source="127.0.0.4")
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert len(gw.queued) == 2
    # The trusted network is never looked up.
    assert (await banner(gw.port, "127.0.0.1")).startswith("220")


async def test_dnsbl_allowlisted_client_skips_greylisting(gateway: MakeGateway, dns_server: LocalDns, unique: str,
                                                          redis_client: aioredis.Redis) -> None:
    allow = f"allow-{unique}.test"
    dns_server.set_zone(allow, ["2.0.0.127 IN A 127.0.0.2"])
    dns_server.apply()
    checker = DnsListChecker(make_resolver([dns_server.host], dns_server.port, 2.0), None)
    gw = await gateway(dnsbl=ConnectionDnsbl(checker, [DnsList(allow, -1.0)], threshold=1.0),
                       greylist=GreylistPolicy(redis_client, f"t:{unique}:"))
    smtp = await session(gw.port)
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert len(gw.queued) == 1


@pytest.mark.parametrize("policy,expected", [("accept", "220"), ("tempfail", "421 4.3.0")])
async def test_dnsbl_dns_down_policy(gateway: MakeGateway, unique: str, policy: str, expected: str) -> None:
    dead = make_resolver(["127.0.0.1"], free_port(), 0.3)
    checker = DnsListChecker(dead, None, timeout=0.3)
    gw = await gateway(dnsbl=ConnectionDnsbl(checker, [DnsList(f"bl-{unique}.test")], 1.0, policy))  # type: ignore[arg-type]
    assert (await banner(gw.port)).startswith(expected)


# --- SPF --------------------------------------------------------------------------------------------

@pytest.fixture
def spf_zone(dns_server: LocalDns, unique: str) -> str:
    zone = f"spf-{unique}.test"
    dns_server.set_zone(zone, [
        "@ IN MX 10 mx", "mx IN A 127.0.0.9",
        'pass IN TXT "v=spf1 ip4:127.0.0.2 -all"', "pass IN A 127.0.0.9",
        'fail IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        'soft IN TXT "v=spf1 ip4:192.0.2.1 ~all"',
        "none IN A 127.0.0.9",
        'helo IN TXT "v=spf1 a -all"', "helo IN A 127.0.0.2",
        'perm IN TXT "v=spf1 ip4:127.0.0.2 bogus:x -all"',
    ])
    dns_server.apply()
    return zone


@pytest.mark.parametrize("local,result", [("pass", "pass"), ("soft", "softfail"), ("none", "none"),
                                          ("perm", "permerror")])
async def test_spf_results_recorded_and_received_spf_added(gateway: MakeGateway, dns_server: LocalDns,
                                                           spf_zone: str, local: str, result: str) -> None:
    gw = await gateway(spf=spf_checker(dns_server))
    smtp = await session(gw.port)
    await smtp.sendmail(f"someone@{local}.{spf_zone}", ["user@example.com"], MESSAGE)
    await smtp.quit()
    event, raw = gw.queued[0]
    assert (event.spf, event.spf_domain) == (result, f"{local}.{spf_zone}")
    first = raw.split(b"\r\n", 1)[0].decode()
    assert first.startswith(f"Received-SPF: {result} (mx.test: ")
    assert b"client-ip=127.0.0.2;" in raw and b"identity=mailfrom" in raw
    assert raw.index(b"Received-SPF:") < raw.index(b"Received: from")


async def test_spf_fail_is_rejected_with_5_7_23(gateway: MakeGateway, dns_server: LocalDns, spf_zone: str) -> None:
    gw = await gateway(spf=spf_checker(dns_server))
    smtp = await session(gw.port)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await smtp.mail(f"x@fail.{spf_zone}")
    assert err.value.code == 550 and err.value.message.startswith("5.7.23 ")
    await smtp.quit()
    event = gw.events[-1]
    assert (event.check, event.code, event.mail_from) == ("spf", 550, f"x@fail.{spf_zone}")


async def test_spf_fail_accepted_when_rejection_is_off(gateway: MakeGateway, dns_server: LocalDns,
                                                       spf_zone: str) -> None:
    gw = await gateway(spf=spf_checker(dns_server), spf_reject_fail=False)
    smtp = await session(gw.port)
    await smtp.sendmail(f"x@fail.{spf_zone}", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert gw.queued[0][0].spf == "fail" and gw.queued[0][1].startswith(b"Received-SPF: fail")


async def test_spf_temperror_when_dns_fails(gateway: MakeGateway, dns_server: LocalDns, unique: str) -> None:
    gw = await gateway(spf=spf_checker(dns_server))
    smtp = await session(gw.port)
    # A zone nobody serves: the server refuses, SPF cannot be evaluated -> temperror, mail accepted.
    await smtp.sendmail(f"x@unserved-{unique}.invalid", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert gw.queued[0][0].spf == "temperror"


async def test_spf_null_sender_checks_the_helo_name(gateway: MakeGateway, dns_server: LocalDns,
                                                    spf_zone: str) -> None:
    gw = await gateway(spf=spf_checker(dns_server))
    smtp = await session(gw.port, helo=f"helo.{spf_zone}")
    await smtp.sendmail("", ["user@example.com"], MESSAGE)
    await smtp.quit()
    event, raw = gw.queued[0]
    assert (event.spf, event.spf_domain) == ("pass", f"helo.{spf_zone}") and b"identity=helo" in raw


async def test_spf_pass_bypasses_greylisting_when_configured(gateway: MakeGateway, dns_server: LocalDns,
                                                             spf_zone: str, redis_client: aioredis.Redis,
                                                             unique: str) -> None:
    grey = GreylistPolicy(redis_client, f"t:{unique}:")
    gw = await gateway(spf=spf_checker(dns_server), greylist=grey, greylist_spf_pass_bypass=True)
    smtp = await session(gw.port)
    await smtp.sendmail(f"a@pass.{spf_zone}", ["user@example.com"], MESSAGE)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await smtp.sendmail(f"a@soft.{spf_zone}", ["user@example.com"], MESSAGE)  # greylisted
    await smtp.quit()
    assert len(gw.queued) == 1


async def test_spf_with_hostile_senders_never_crashes(gateway: MakeGateway, dns_server: LocalDns) -> None:
    gw = await gateway(spf=spf_checker(dns_server))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, local_addr=("127.0.0.2", 0))
    await reader.readline()
    writer.write(b"EHLO client.test\r\n")
    while (await reader.readline())[3:4] == b"-":
        pass
    for sender in [b"a@" + b"x" * 300, b"a@[127.0.0.1]", b"a@.", b"a@-bad-.test", b"a@xn--zz.test",
                   "a@bücher.test".encode(), b"a@" + b"a." * 200 + b"test"]:
        writer.write(b"MAIL FROM:<" + sender + b">\r\n")
        answer = await asyncio.wait_for(reader.readline(), 10)
        assert answer[:1] in b"25", answer
        writer.write(b"RSET\r\n")
        assert (await reader.readline()).startswith(b"250")
    writer.close()


# --- sender domain, HELO, reverse DNS ---------------------------------------------------------------

async def test_unknown_sender_domain(gateway: MakeGateway, dns_server: LocalDns, unique: str) -> None:
    zone = f"sd-{unique}.test"
    dns_server.set_zone(zone, ["@ IN MX 10 mx", "mx IN A 127.0.0.9", "aonly IN A 127.0.0.9",
                               "v6only IN AAAA ::1", "txtonly IN TXT hello", "nullmx IN MX 0 ."])
    dns_server.apply()
    gw = await gateway(hostchecks=host_checks(dns_server, reject_unknown_sender_domain=True))
    smtp = await session(gw.port)
    for ok in [f"a@{zone}", f"a@aonly.{zone}", f"a@V6ONLY.{zone}", ""]:
        await smtp.mail(ok)
        await smtp.rset()
    for bad, code in [(f"a@missing.{zone}", 550), (f"a@txtonly.{zone}", 550), (f"a@nullmx.{zone}", 550),
                      (f"a@unserved-{unique}.invalid", 450)]:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await smtp.mail(bad)
        assert err.value.code == code, (bad, err.value)
    await smtp.quit()
    assert gw.checks() == ["sender_domain"] * 4 and [e.code for e in gw.events] == [550, 550, 550, 450]


@pytest.mark.parametrize("name,ok", [("mail.example.org", True), ("[127.0.0.5]", True), ("[IPv6:::5]", True),
                                     ("localhost", True), ("bad_host!", False), ("-x.example", False),
                                     ("[999.1.1.1]", False), ("a" * 70 + ".example", False)])
def test_helo_syntax(name: str, ok: bool) -> None:
    checks = HostChecks(make_resolver(["127.0.0.1"], 1, 0.1), own_names=["mx.test"], own_ips=["127.0.0.1"],
                        helo_checks=True)
    assert (checks.check_helo(name) is None) is ok
    assert valid_hostname("mail.example.org") and not valid_hostname("x y")


async def test_helo_checks_over_smtp(gateway: MakeGateway, dns_server: LocalDns) -> None:
    gw = await gateway(hostchecks=host_checks(dns_server, helo_checks=True, helo_require_fqdn=True))
    for helo, code in [("nodots", 504), ("bad..name", 501), ("MX.test", 550), ("[127.0.0.1]", 550),
                       ("under_score!", 501)]:
        smtp = await session(gw.port, helo=helo)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await smtp.mail("a@example.org")
        assert err.value.code == code, helo
        await smtp.quit()
    smtp = await session(gw.port, helo="good.example.org")
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()
    assert gw.checks() == ["helo"] * 5 and len(gw.queued) == 1
    # Trusted clients are not checked.
    smtp = await session(gw.port, helo="nodots", source="127.0.0.1")
    await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
    await smtp.quit()


@pytest.mark.parametrize("mode,client,expected", [
    ("ptr", "127.0.0.2", 250), ("fcrdns", "127.0.0.2", 250), ("ptr", "127.0.0.3", 250),
    ("fcrdns", "127.0.0.3", 550), ("ptr", "127.0.0.4", 550), ("off", "127.0.0.4", 250)])
async def test_reverse_dns(gateway: MakeGateway, dns_server: LocalDns, unique: str, mode: RdnsMode, client: str,
                           expected: int) -> None:
    zone = f"rdns-{unique}.test"
    dns_server.set_zone("0.0.127.in-addr.arpa", [f"2 IN PTR good.{zone}.", f"3 IN PTR liar.{zone}."])
    dns_server.set_zone(zone, ["good IN A 127.0.0.2", "liar IN A 127.0.0.99"])
    dns_server.apply()
    gw = await gateway(hostchecks=host_checks(dns_server, rdns=mode))
    smtp = await session(gw.port, source=client)
    if expected == 250:
        await smtp.sendmail("a@example.org", ["user@example.com"], MESSAGE)
        event = gw.queued[0][0]
        assert event.client_rdns == {"127.0.0.2": f"good.{zone}", "127.0.0.3": f"liar.{zone}",
                                     "127.0.0.4": ""}[client]
    else:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await smtp.mail("a@example.org")
        assert err.value.code == expected and "5.7.25" in err.value.message
        assert gw.checks() == ["rdns"]
    await smtp.quit()


async def test_reverse_dns_lookup_failure_is_temporary(gateway: MakeGateway) -> None:
    checks = HostChecks(make_resolver(["127.0.0.1"], free_port(), 0.3), own_names=["mx.test"], own_ips=[],
                        rdns="ptr")
    gw = await gateway(hostchecks=checks)
    smtp = await session(gw.port)
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
        await smtp.mail("a@example.org")
    assert err.value.code == 450
    await smtp.quit()
