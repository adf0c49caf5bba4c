"""Sender authentication: SPF (the ingress result), DKIM (every signature), DMARC and ARC.

DKIM and ARC are verified by dkimpy. Its DNS lookups never touch the network itself: we read the
signatures first, fetch every TXT record they need (and the DMARC records) in parallel with our
configured asyncio resolver, then run dkimpy in an executor with a `dnsfunc` that answers from those
records. So the event loop never blocks and every query goes through the gateway's resolver.

DMARC (RFC 7489) is evaluated here: the policy record of the From domain, else of its organisational
domain (public suffix list, `publicsuffixlist`); DKIM or SPF must pass *aligned* (relaxed: same
organisational domain, strict: same domain); p / sp / pct give the disposition (a message outside pct
gets the next weaker policy, as the RFC says). The outcome is symbols and an Authentication-Results
header (RFC 8601) for the delivered mail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses

import dkim
import dns.asyncresolver
import dns.exception
import dns.resolver

from mailgw_libs import mime
from mailgw_libs.events import HeaderChange, SymbolHit

from .rules.uris import registered_domain

log = logging.getLogger(__name__)

MAX_SIGNATURES = 8          # DKIM signatures verified per message (more are ignored: a cost bound)
MAX_TXT_BYTES = 8192
MIN_KEY_BITS = 1024
_TAG = re.compile(r"^\s*([a-z]+)\s*=\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_DOMAIN = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62}\.)*[a-z0-9-]{1,63}$")

# Scores are ours. A valid signature proves little by itself (spammers sign too); alignment with the
# From domain and DMARC say more. Failures under a published reject policy say the most.
SCORES = {
    "DKIM_VALID": -0.1, "DKIM_VALID_AU": -0.2, "DKIM_INVALID": 0.5, "DKIM_TEMPERROR": 0.0,
    "SPF_PASS": -0.1, "SPF_FAIL": 1.5, "SPF_SOFTFAIL": 0.7, "SPF_NEUTRAL": 0.1, "SPF_PERMERROR": 0.3,
    "SPF_TEMPERROR": 0.0,
    "DMARC_PASS": -0.2, "DMARC_REJECT": 4.0, "DMARC_QUARANTINE": 2.5, "DMARC_NONE": 0.3, "DMARC_TEMPERROR": 0.0,
    "ARC_VALID": -0.1, "ARC_INVALID": 0.5,
}


def tags(value: str) -> dict[str, str]:
    """`k=v; k=v` tag lists of DKIM-Signature, ARC headers and DMARC records (keys lower case)."""
    out: dict[str, str] = {}
    for item in value.split(";")[:40]:
        m = _TAG.match(item)
        if m:
            out.setdefault(m.group(1).lower(), "".join(m.group(2).split()))
    return out


def _domain(value: str) -> str:
    value = value.strip().strip(".").lower()
    return value if _DOMAIN.match(value) and len(value) <= 253 else ""


@dataclass
class DkimResult:
    domain: str
    selector: str
    result: str  # pass | fail | temperror | permerror
    b: str = ""


@dataclass
class AuthResult:
    hits: list[SymbolHit] = field(default_factory=list)
    header: str = ""
    dkim: list[DkimResult] = field(default_factory=list)
    dmarc: str = "none"
    arc: str = "none"

    def header_change(self) -> HeaderChange:
        return HeaderChange(name="Authentication-Results", value=self.header)


@dataclass(frozen=True)
class DmarcRecord:
    policy: str            # none | quarantine | reject
    subdomain_policy: str
    pct: int
    adkim: str             # r | s
    aspf: str


def parse_dmarc(txt: str) -> DmarcRecord | None:
    """A DMARC record, or None when it is not one (RFC 7489: v=DMARC1 first; an invalid p is ignored
    unless rua is present, then it is none; we read an invalid p as none)."""
    if not re.match(r"^\s*v\s*=\s*DMARC1\s*(;|$)", txt, re.IGNORECASE):
        return None
    t = tags(txt)
    policy = t.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        policy = "none"
    sp = t.get("sp", "").lower()
    try:
        pct = max(0, min(100, int(t.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(policy, sp if sp in ("none", "quarantine", "reject") else policy, pct,
                       "s" if t.get("adkim", "r").lower() == "s" else "r",
                       "s" if t.get("aspf", "r").lower() == "s" else "r")


def aligned(a: str, b: str, mode: str) -> bool:
    if not a or not b:
        return False
    return a == b if mode == "s" else registered_domain(a) == registered_domain(b)


def _weaker(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def _in_pct(pct: int, key: str) -> bool:
    """Deterministic sampling for pct: the same message always gets the same answer."""
    if pct >= 100:
        return True
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:2], "big") % 100 < pct


class TxtCache:
    """The TXT answers fetched before verification: name -> records, or an error kind."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.errors: dict[str, str] = {}  # name -> "nxdomain" | "temperror"

    def dnsfunc(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".").lower()
        if self.errors.get(key) == "temperror":
            raise dkim.DnsTimeoutError(f"DNS lookup of {key} failed")
        records = self.records.get(key)
        return records[0] if records else None


async def fetch_txt(resolver: dns.asyncresolver.Resolver, names: Iterable[str]) -> TxtCache:
    cache = TxtCache()

    async def one(name: str) -> None:
        try:
            answer = await resolver.resolve(name, "TXT", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            cache.errors[name] = "nxdomain"
            return
        except (dns.exception.DNSException, OSError) as exc:
            log.debug("TXT %s: %s", name, exc)
            cache.errors[name] = "temperror"
            return
        records = [b"".join(r.strings)[:MAX_TXT_BYTES] for r in answer.rrset or []]
        cache.records[name] = records
        if not records:
            cache.errors[name] = "nxdomain"

    await asyncio.gather(*(one(n) for n in dict.fromkeys(names)))
    return cache


def _strip_mbox_line(raw: bytes) -> bytes:
    if raw.startswith(b"From "):
        _, _, rest = raw.partition(b"\n")
        return rest
    return raw


class Authenticator:
    def __init__(self, resolver: dns.asyncresolver.Resolver, authserv_id: str = "mailgw") -> None:
        self.resolver = resolver
        self.authserv_id = authserv_id

    async def check(self, raw: bytes, spf: str = "", spf_domain: str = "", message_key: str = "") -> AuthResult:
        raw = _strip_mbox_line(raw)
        headers = mime.parse_headers_only(raw)
        signatures = self._signatures(headers, "DKIM-Signature")
        arc_sigs = self._signatures(headers, "ARC-Message-Signature") + self._signatures(headers, "ARC-Seal")
        from_domain = self._from_domain(headers)
        names = [f"{s}._domainkey.{d}" for d, s, _ in signatures + arc_sigs]
        org = registered_domain(from_domain) if from_domain else ""
        if from_domain:
            names.append(f"_dmarc.{from_domain}")
            if org and org != from_domain:
                names.append(f"_dmarc.{org}")
        cache = await fetch_txt(self.resolver, names)
        loop = asyncio.get_running_loop()
        dkim_results, arc = await loop.run_in_executor(None, self._verify, raw, signatures, bool(arc_sigs), cache)
        result = AuthResult(dkim=dkim_results, arc=arc)
        dmarc, policy, detail = self._dmarc(from_domain, org, dkim_results, spf, spf_domain, cache,
                                            message_key or hashlib.sha256(raw[:4096]).hexdigest())
        result.dmarc = dmarc
        result.hits = self._symbols(dkim_results, from_domain, spf, spf_domain, dmarc, policy, detail, arc)
        result.header = self._header(dkim_results, spf, spf_domain, dmarc, policy, from_domain, arc)
        return result

    @staticmethod
    def _signatures(headers: Message, name: str) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for value in (headers.get_all(name) or [])[:MAX_SIGNATURES]:
            t = tags(str(value))
            d, s = _domain(t.get("d", "")), _domain(t.get("s", ""))
            if d and s:
                out.append((d, s, t.get("b", "")[:12]))
            else:
                out.append(("", "", ""))
        return out

    @staticmethod
    def _from_domain(headers: Message) -> str:
        values = headers.get_all("From") or []
        addresses = [a for _, a in getaddresses([str(v) for v in values]) if a]
        if len(addresses) != 1 or "@" not in addresses[0]:
            return ""  # DMARC needs exactly one author domain
        return _domain(addresses[0].rpartition("@")[2])

    @staticmethod
    def _verify(raw: bytes, signatures: list[tuple[str, str, str]], has_arc: bool,
                cache: TxtCache) -> tuple[list[DkimResult], str]:
        results: list[DkimResult] = []
        for index, (d, s, b) in enumerate(signatures):
            if not d:
                results.append(DkimResult("", "", "permerror"))
                continue
            try:
                ok = dkim.DKIM(raw, minkey=MIN_KEY_BITS).verify(idx=index, dnsfunc=cache.dnsfunc)
                outcome = "pass" if ok else "fail"
                # dkimpy reports a failed key lookup as a failed signature: it is a temporary error
                if not ok and cache.errors.get(f"{s}._domainkey.{d}") == "temperror":
                    outcome = "temperror"
            except dkim.DnsTimeoutError:
                outcome = "temperror"
            except (dkim.DKIMException, ValueError, IndexError, TypeError) as exc:
                log.debug("dkim %s/%s: %s", d, s, exc)
                outcome = "permerror"
            results.append(DkimResult(d, s, outcome, b))
        arc = "none"
        if has_arc:
            try:
                cv, _, _ = dkim.arc_verify(raw, dnsfunc=cache.dnsfunc, minkey=MIN_KEY_BITS)
            except (dkim.DKIMException, ValueError, IndexError, TypeError):
                cv = dkim.CV_Fail
            arc = {dkim.CV_Pass: "pass", dkim.CV_Fail: "fail"}.get(cv, "none")
            if cv is None:
                arc = "fail"
        return results, arc

    @staticmethod
    def _dmarc(from_domain: str, org: str, dkim_results: list[DkimResult], spf: str, spf_domain: str,
               cache: TxtCache, key: str) -> tuple[str, str, str]:
        """(result, disposition, detail): result pass | fail | none | temperror."""
        if not from_domain:
            return "none", "", "no single From domain"
        record, at_org = None, False
        for name, is_org in ((f"_dmarc.{from_domain}", False), (f"_dmarc.{org}", True)):
            if is_org and (not org or org == from_domain):
                break
            if cache.errors.get(name) == "temperror":
                return "temperror", "", f"{name} lookup failed"
            found = [r for r in (parse_dmarc(t.decode("utf-8", "replace")) for t in cache.records.get(name, []))
                     if r is not None]
            if len(found) == 1:
                record, at_org = found[0], is_org
                break
        if record is None:
            return "none", "", "no DMARC record"
        dkim_ok = any(r.result == "pass" and aligned(r.domain, from_domain, record.adkim) for r in dkim_results)
        spf_ok = spf == "pass" and aligned(_domain(spf_domain), from_domain, record.aspf)
        if dkim_ok or spf_ok:
            return "pass", "", "aligned " + ("dkim" if dkim_ok else "spf")
        policy = record.subdomain_policy if at_org else record.policy
        if not _in_pct(record.pct, key):
            policy = _weaker(policy)
        return "fail", policy, f"p={policy} pct={record.pct}"

    @staticmethod
    def _symbols(dkim_results: list[DkimResult], from_domain: str, spf: str, spf_domain: str, dmarc: str,
                 policy: str, detail: str, arc: str) -> list[SymbolHit]:
        found: dict[str, str] = {}
        for r in dkim_results:
            if r.result == "pass":
                found.setdefault("DKIM_VALID", r.domain)
                if from_domain and aligned(r.domain, from_domain, "r"):
                    found.setdefault("DKIM_VALID_AU", r.domain)
            elif r.result in ("fail", "permerror"):
                found.setdefault("DKIM_INVALID", f"{r.domain or 'malformed signature'} ({r.result})")
            elif r.result == "temperror":
                found.setdefault("DKIM_TEMPERROR", r.domain)
        if spf in ("pass", "fail", "softfail", "neutral", "permerror", "temperror"):
            found["SPF_" + spf.upper()] = spf_domain
        if dmarc == "pass":
            found["DMARC_PASS"] = from_domain
        elif dmarc == "temperror":
            found["DMARC_TEMPERROR"] = detail
        elif dmarc == "fail":
            found["DMARC_" + (policy or "none").upper()] = f"{from_domain}: {detail}"
        if arc == "pass":
            found["ARC_VALID"] = "ARC chain verified"
        elif arc == "fail":
            found["ARC_INVALID"] = "ARC chain broken"
        return [SymbolHit(name=n, score=SCORES[n], detail=d[:200]) for n, d in found.items()]

    def _header(self, dkim_results: list[DkimResult], spf: str, spf_domain: str, dmarc: str, policy: str,
                from_domain: str, arc: str) -> str:
        parts = [self.authserv_id]
        if not dkim_results:
            parts.append("dkim=none")
        for r in dkim_results:
            text = f"dkim={r.result}"
            if r.domain:
                text += f" header.d={r.domain} header.s={r.selector}"
            if r.b:
                text += f" header.b={r.b[:8]}"
            parts.append(text)
        if spf:
            parts.append(f"spf={spf}" + (f" smtp.mailfrom={spf_domain}" if spf_domain else ""))
        parts.append(f"dmarc={dmarc}" + (f" (p={policy})" if policy else "")
                     + (f" header.from={from_domain}" if from_domain else ""))
        if arc != "none":
            parts.append(f"arc={arc}")
        return "; ".join(parts)
