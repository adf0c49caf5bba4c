"""Recipient verification over real SMTP: static lists, LDAP (real slapd, Redis cache), callout to a real
downstream SMTP server (aiosmtpd) with the answers cached in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgw_devstack.infra import free_port
from mailgw_devstack.ldapserver import LocalLdap
from mailgw_ingress.recipients import (
    CalloutRecipients,
    DirectoryRecipients,
    Known,
    RecipientVerifier,
    StaticRecipients,
)
from mailgw_libs.directory import Directory, DirectoryProfile

from .conftest import MakeGateway

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


async def session(port: int, source: str = "127.0.0.2") -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, source_address=(source, 0), start_tls=False,
                           local_hostname="client.test", timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    await smtp.mail("sender@example.org")
    return smtp


async def rcpt_code(smtp: aiosmtplib.SMTP, address: str) -> int:
    try:
        return (await smtp.rcpt(address)).code
    except aiosmtplib.SMTPRecipientRefused as exc:
        return exc.code


async def test_static_list(gateway: MakeGateway) -> None:
    static = StaticRecipients(["alice@example.com", "Bob@Example.COM", "@open.example.com", "not an address"])
    gw = await gateway(recipients=RecipientVerifier([static]), relay_domains=("example.com", "open.example.com",
                                                                              "other.example.com"))
    smtp = await session(gw.port)
    assert await rcpt_code(smtp, "alice@example.com") == 250
    assert await rcpt_code(smtp, "BOB@example.com") == 250
    assert await rcpt_code(smtp, "anyone@open.example.com") == 250
    assert await rcpt_code(smtp, "anyone@other.example.com") == 250  # a domain the list does not mention
    assert await rcpt_code(smtp, "carol@example.com") == 550
    await smtp.quit()
    event = gw.events[-1]
    assert (event.check, event.code, event.rcpt, event.reason) == ("recipient", 550, "carol@example.com",
                                                                   "unknown recipient (static)")


async def test_unknown_recipient_reply_text(gateway: MakeGateway) -> None:
    gw = await gateway(recipients=RecipientVerifier([StaticRecipients(["a@example.com"])]))
    smtp = await session(gw.port)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused) as err:
        await smtp.rcpt("zz@example.com")
    assert err.value.message == "5.1.1 <zz@example.com>: Recipient address rejected: User unknown"
    await smtp.quit()


def seed(ldap: LocalLdap, unique: str) -> str:
    base = ldap.add_ou(f"r{unique}")
    ldap.add_user("alice", "alice@example.com", base=base, aliases=[f"sales-{unique}@example.com"])
    return base


async def test_ldap_verification_and_ldap_down(gateway: MakeGateway, ldap_server: LocalLdap,
                                               redis_client: aioredis.Redis, unique: str) -> None:
    base = seed(ldap_server, unique)
    directory = Directory(DirectoryProfile(name="corp", uri=ldap_server.url, base_dn=base,
                                           bind_dn=ldap_server.admin_dn, password=ldap_server.password,
                                           timeout_s=1.0), redis_client, prefix=f"t{unique}:")
    await directory.sync()
    gw = await gateway(recipients=RecipientVerifier([DirectoryRecipients([directory])]))
    smtp = await session(gw.port)
    assert await rcpt_code(smtp, "alice@example.com") == 250
    assert await rcpt_code(smtp, f"Sales-{unique}@example.com") == 250
    assert await rcpt_code(smtp, "nobody@example.com") == 550
    ldap_server.stop()
    try:
        # The synced directory keeps answering while LDAP is down.
        assert await rcpt_code(smtp, "alice@example.com") == 250
        assert await rcpt_code(smtp, "nobody2@example.com") == 550
        await smtp.quit()
        # A directory with no cached answer and LDAP unreachable: tempfail, never "unknown".
        cold = Directory(DirectoryProfile(name="cold", uri=ldap_server.url, base_dn=base, timeout_s=1.0),
                         redis_client, prefix=f"t{unique}:")
        gw2 = await gateway(recipients=RecipientVerifier([DirectoryRecipients([cold])]))
        smtp = await session(gw2.port)
        assert await rcpt_code(smtp, "alice@example.com") == 451
        await smtp.quit()
        assert gw2.events[-1].check == "recipient" and gw2.events[-1].code == 451
    finally:
        ldap_server.start()


class Downstream:
    """A real downstream server that knows some users and fails the ones it is told to."""

    def __init__(self) -> None:
        self.known = {"alice@example.com"}
        self.tempfail = {"busy@example.com"}
        self.probes: list[str] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        self.probes.append(address)
        if address in self.tempfail:
            return "451 4.3.0 try later"
        if address not in self.known:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
async def downstream() -> AsyncIterator[tuple[Downstream, int]]:
    handler = Downstream()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


async def test_callout_probe_cache_and_tempfail(gateway: MakeGateway, downstream: tuple[Downstream, int],
                                                redis_client: aioredis.Redis, unique: str) -> None:
    server, port = downstream
    callout = CalloutRecipients({}, f"127.0.0.1:{port}", "mx.test", redis_client, prefix=f"t{unique}:",
                                timeout_s=5)
    gw = await gateway(recipients=RecipientVerifier([callout]))
    smtp = await session(gw.port)
    assert await rcpt_code(smtp, "alice@example.com") == 250
    assert await rcpt_code(smtp, "ghost@example.com") == 550
    assert await rcpt_code(smtp, "busy@example.com") == 451
    assert await rcpt_code(smtp, "alice@example.com") == 250
    assert await rcpt_code(smtp, "ghost@example.com") == 550
    await smtp.quit()
    # Positive and negative answers came from the cache the second time; the tempfail was not cached.
    assert server.probes == ["alice@example.com", "ghost@example.com", "busy@example.com"]
    assert await redis_client.ttl(f"t{unique}:callout:ghost@example.com") <= 3600


async def test_callout_downstream_down_is_a_tempfail(redis_client: aioredis.Redis, unique: str) -> None:
    callout = CalloutRecipients({"example.com": f"127.0.0.1:{free_port()}"}, "", "mx.test", redis_client,
                                prefix=f"t{unique}:", timeout_s=1)
    verifier = RecipientVerifier([callout])
    assert await verifier.verify("alice@example.com") == (Known.TEMPFAIL, "callout")
    # No callout target for other domains: no opinion, accepted.
    assert await verifier.verify("a@elsewhere.example") == (Known.KNOWN, "")


async def test_first_known_wins_and_hostile_addresses(redis_client: aioredis.Redis) -> None:
    verifier = RecipientVerifier([StaticRecipients(["a@example.com"]),
                                  StaticRecipients(["b@example.com"])])
    assert (await verifier.verify("b@example.com"))[0] is Known.KNOWN
    for hostile in ["", "x" * 5000, "a@b@c", "<>", "a\r\nRCPT TO:<x>@example.com", "(a)@example.com"]:
        assert (await verifier.verify(hostile))[0] is Known.UNKNOWN
