"""Where each recipient's mail goes, and the delivery of a batch of transactions to all destinations.

Routing, in order: a transport configured for the recipient's domain (any direction); inbound mail to
the default relay; outbound mail to the smarthost, else to the domain's MX hosts (dnspython's async
resolver, with a TTL cache). MX rules (RFC 5321 5.1, RFC 7505): hosts in preference order; no MX
record -> the domain itself (implicit MX, its A/AAAA records); a null MX (".") -> permanent failure;
a domain that does not exist (NXDOMAIN) or cannot be a DNS name -> permanent failure; DNS timeouts
and server failures -> deferred. An MX host that cannot be reached (a session failure) passes its
recipients to the next host.

`Dispatcher.deliver` splits every transaction (one per distinct modified copy of the message) by
destination and sends, per destination, one session carrying one transaction per copy with all of
its recipients; destinations are served concurrently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mailgw_libs.events import DeliveryStatus, Direction

from .relay import Protocol, RecipientOutcome, SmtpRelay, TlsPolicy, Transaction
from .settings import Transport

log = logging.getLogger("mailgw.delivery.routing")

# Enhanced status codes of the permanent DNS failures (RFC 3463 / RFC 7505).
NULL_MX = "5.1.10 recipient domain does not accept mail (null MX, RFC 7505)"
NO_SUCH_DOMAIN = "5.1.2 recipient domain does not exist"
BAD_DOMAIN = "5.1.2 recipient domain is not a valid DNS name"
# Endpoints kept with their idle sessions; past this many, the idle ones are closed (MX fan-out).
MAX_RELAYS = 256

_T = TypeVar("_T")


@dataclass(frozen=True)
class Endpoint:
    host: str  # a name or an address to connect to
    port: int
    protocol: Protocol = "smtp"
    tls: TlsPolicy = "may"
    tls_name: str = ""  # the name the certificate must carry, when `host` is an address
    ca_file: str = ""  # CA bundle of the "verify" policy (empty: the system store); part of the relay's identity

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """A fixed endpoint, or an MX lookup of `mx_domain` with the TLS policy `tls`."""

    endpoint: Endpoint | None = None
    mx_domain: str = ""
    tls: TlsPolicy = "may"
    ca_file: str = ""  # for the endpoints of the MX hosts

    @property
    def name(self) -> str:
        return self.endpoint.name if self.endpoint else f"mx:{self.mx_domain}"


def recipient_domain(recipient: str) -> str:
    return recipient.rpartition("@")[2].strip().rstrip(".").lower()


def route_of(transport: Transport, tls: TlsPolicy | None = None, ca_file: str = "") -> Route:
    """A transport's route: its host, or the MX hosts of its host (`use_mx`); `tls` overrides its policy."""
    if transport.use_mx:
        return Route(mx_domain=transport.host.lower().rstrip("."), tls=tls or transport.tls, ca_file=ca_file)
    return Route(Endpoint(transport.host, transport.port, transport.protocol, tls or transport.tls,
                          ca_file=ca_file))


class Router:
    """The routing table in force. Immutable once built: a new configuration builds a new Router, and a
    delivery keeps the one it started with."""

    def __init__(self, default: Endpoint | Route, transports: Mapping[str, Transport] | None = None,
                 smarthost: Transport | None = None, outbound_tls: TlsPolicy = "may",
                 tls_policies: Mapping[str, TlsPolicy] | None = None, ca_file: str = "") -> None:
        self.default = default if isinstance(default, Route) else Route(default)
        self.ca_file = ca_file
        self.transports = {k.strip().lower().rstrip("."): v for k, v in (transports or {}).items()}
        self.smarthost = smarthost
        self.outbound_tls = outbound_tls
        self.tls_policies = {k.strip().lower().rstrip("."): v for k, v in (tls_policies or {}).items()}

    @staticmethod
    def _lookup(table: Mapping[str, _T], domain: str) -> _T | None:
        """Exact domain first, then ".parent" entries from the closest parent up."""
        if domain in table:
            return table[domain]
        labels = domain.split(".")
        for i in range(1, len(labels)):
            found = table.get("." + ".".join(labels[i:]))
            if found is not None:
                return found
        return None

    def route(self, recipient: str, direction: Direction) -> Route:
        domain = recipient_domain(recipient)
        transport = self._lookup(self.transports, domain)
        if transport is not None:
            return route_of(transport, ca_file=self.ca_file)
        if direction != Direction.OUTBOUND:
            return self.default
        tls = self._lookup(self.tls_policies, domain)
        if self.smarthost is not None:
            return route_of(self.smarthost, tls, self.ca_file)
        return Route(mx_domain=domain, tls=tls or self.outbound_tls, ca_file=self.ca_file)


@dataclass(frozen=True)
class MxAnswer:
    hosts: tuple[str, ...] = ()  # in preference order
    permanent: str = ""  # why the domain can never get mail (null MX, no such domain)
    temporary: str = ""  # why it cannot now (DNS timeout, SERVFAIL)


class MxResolver:
    """MX and address lookups through dnspython's async resolver (`mailgw_libs.resolver.make_resolver`),
    with a TTL cache of its own."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        resolver.cache = dns.resolver.Cache()
        self.resolver = resolver

    @staticmethod
    def _name(domain: str) -> dns.name.Name | None:
        if not domain or len(domain) > 253 or any(c.isspace() or not c.isprintable() for c in domain):
            return None
        try:
            return dns.name.from_text(domain)  # IDNA for non-ASCII names
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return None

    async def mx(self, domain: str) -> MxAnswer:
        name = self._name(domain)
        if name is None:
            return MxAnswer(permanent=BAD_DOMAIN)
        try:
            answer = await self.resolver.resolve(name, dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN:
            return MxAnswer(permanent=NO_SUCH_DOMAIN)
        except dns.resolver.NoAnswer:
            return MxAnswer(hosts=(name.to_text(omit_final_dot=True),))  # implicit MX
        except dns.exception.DNSException as exc:
            return MxAnswer(temporary=f"4.4.3 MX lookup of {domain} failed: {type(exc).__name__}")
        # Equal preferences in random order (RFC 5321 5.1): the load spreads over them.
        records = sorted(answer, key=lambda r: (r.preference, random.random()))
        if any(r.exchange == dns.name.root for r in records):
            return MxAnswer(permanent=NULL_MX)
        hosts = tuple(dict.fromkeys(r.exchange.to_text(omit_final_dot=True) for r in records))
        return MxAnswer(hosts=hosts)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of an MX host; [] when it has none or DNS fails."""
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        name = self._name(host)
        if name is None:
            return []
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await self.resolver.resolve(name, rdtype)
            except dns.exception.DNSException:
                continue
            found += [r.address for r in answer]
        return found


RelayFactory = Callable[[Endpoint], SmtpRelay]


class Dispatcher:
    """Delivers transactions to every destination of their recipients (the Relay of the FateApplier).

    `use(router)` puts a new routing table in force at once (a configuration change); a `deliver` call in
    progress finishes with the table it started with. Relays are kept per endpoint, and an endpoint carries
    its whole TLS policy, so a changed policy gets a relay (and sessions) of its own."""

    def __init__(self, router: Router, resolver: MxResolver, relay_for: RelayFactory, mx_port: int = 25,
                 max_hosts: int = 5) -> None:
        self.router = router
        self.resolver = resolver
        self.relay_for = relay_for
        self.mx_port = mx_port
        self.max_hosts = max_hosts
        self._relays: dict[Endpoint, SmtpRelay] = {}

    @property
    def name(self) -> str:
        return self.router.default.name

    def use(self, router: Router) -> None:
        self.router = router

    async def _relay(self, endpoint: Endpoint) -> SmtpRelay:
        relay = self._relays.get(endpoint)
        if relay is None:
            if len(self._relays) >= MAX_RELAYS:
                await self.close()
            relay = self._relays[endpoint] = self.relay_for(endpoint)
        return relay

    async def close(self) -> None:
        relays, self._relays = list(self._relays.values()), {}
        for relay in relays:
            await relay.close()

    async def deliver(self, transactions: Sequence[Transaction]) -> list[list[RecipientOutcome]]:
        router = self.router  # the snapshot this delivery keeps
        by_route: dict[Route, list[tuple[int, Transaction]]] = {}
        for index, tx in enumerate(transactions):
            split: dict[Route, list[str]] = {}
            for recipient in tx.recipients:
                split.setdefault(router.route(recipient, tx.direction), []).append(recipient)
            for route, recipients in split.items():
                by_route.setdefault(route, []).append((index, replace(tx, recipients=tuple(recipients))))
        results: list[list[RecipientOutcome]] = [[] for _ in transactions]

        async def serve(route: Route, items: list[tuple[int, Transaction]]) -> None:
            outcomes = await self._deliver_route(route, [tx for _, tx in items])
            for (index, _), tx_outcomes in zip(items, outcomes, strict=True):
                results[index] += tx_outcomes

        await asyncio.gather(*(serve(route, items) for route, items in by_route.items()))
        for index, tx in enumerate(transactions):  # outcomes in the order of the recipients
            order = {r: i for i, r in enumerate(tx.recipients)}
            results[index].sort(key=lambda o: order.get(o.recipient, len(order)))
        return results

    async def _deliver_route(self, route: Route, txs: list[Transaction]) -> list[list[RecipientOutcome]]:
        if route.endpoint is not None:
            return await (await self._relay(route.endpoint)).deliver(txs)
        answer = await self.resolver.mx(route.mx_domain)
        if answer.permanent or answer.temporary:
            status = DeliveryStatus.BOUNCED if answer.permanent else DeliveryStatus.DEFERRED
            text = answer.permanent or answer.temporary
            log.info("no MX delivery", extra={"domain": route.mx_domain, "reason": text})
            return [[RecipientOutcome(r, status, 0, text, route.name) for r in tx.recipients] for tx in txs]
        return await self._deliver_mx(route, answer.hosts, txs)

    async def _deliver_mx(self, route: Route, hosts: Sequence[str],
                          txs: list[Transaction]) -> list[list[RecipientOutcome]]:
        """Try the MX hosts (each of their addresses) in order; recipients whose session failed go on to
        the next one. What is still open after `max_hosts` tries is deferred with the last error."""
        final: list[dict[str, RecipientOutcome]] = [{} for _ in txs]
        pending = list(txs)
        last_error = f"4.4.4 no reachable MX host for {route.mx_domain}"
        tries = 0
        for host in hosts:
            addresses = await self.resolver.addresses(host)
            if not addresses:
                last_error = f"4.4.4 MX host {host} has no address"
            for address in addresses:
                if tries >= self.max_hosts or not any(tx.recipients for tx in pending):
                    break
                tries += 1
                endpoint = Endpoint(address, self.mx_port, "smtp", route.tls, tls_name=host, ca_file=route.ca_file)
                outcomes = await (await self._relay(endpoint)).deliver([tx for tx in pending if tx.recipients])
                sent = iter(outcomes)
                next_pending: list[Transaction] = []
                for index, tx in enumerate(pending):
                    if not tx.recipients:
                        next_pending.append(tx)
                        continue
                    retry: list[str] = []
                    for outcome in next(sent):
                        final[index][outcome.recipient] = outcome
                        if outcome.session:
                            retry.append(outcome.recipient)
                            last_error = outcome.response
                    next_pending.append(replace(tx, recipients=tuple(retry)))
                pending = next_pending
        results: list[list[RecipientOutcome]] = []
        for index, tx in enumerate(txs):
            results.append([final[index].get(r) or RecipientOutcome(r, DeliveryStatus.DEFERRED, 0, last_error,
                                                                     route.name, session=True)
                            for r in tx.recipients])
        return results
