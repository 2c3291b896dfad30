"""`mailprime doctor`: does the DNS and the server of a sending domain meet what the big mailbox
providers require (/work/shared/PROVIDER-RULES.md), and if not, what exactly to publish?

Theory of operation. Every rule the providers enforce is checked from the outside, as a receiver
would check it, through the same Resolver port the MX uses (so the answers are the ones a
receiving server sees, and tests run against a real DNS server with crafted zones). Each check is
a coroutine that returns `Finding`s: OK, WARN (works, but a provider may mind, or something
recommended is missing) or FAIL (mail will be rejected or junked, or the check could not tell).
A FAIL carries `fix`, the record to publish or the command to run, ready to paste.

All checks run at once (`asyncio.gather`); each is bounded by `DoctorRequest.timeout` (the DNS
timeout), so one silent nameserver cannot hang the report, and a DNS failure inside a check ends
that check alone with a FAIL saying it could not tell (a blocklist that cannot be asked is a
WARN: the lists are third parties, often refusing public resolvers). Nothing here writes: the
store is only read for the DKIM keys, the certificate file only read.

What is checked and why (RFC and provider rule in each function's docstring): SPF for the From
domain and the bounce (envelope) domain, DKIM records of our keys, DMARC and its alignment,
forward-confirmed reverse DNS of each sending address, MX, MTA-STS and TLS-RPT of the bounce
domain, our TLS certificate, and DNS blocklists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailprime.domain.dkim import DkimKeyState
from mailprime.domain.errors import DomainError
from mailprime.message.dkim import DkimKeyError
from mailprime.message.dkim_verify import parse_tag_list
from mailprime.message.dmarc import (
    Disposition,
    DmarcRecord,
    is_aligned,
    organizational_domain,
    parse_record,
)
from mailprime.message.mta_sts_policy import PolicyError, parse_policy, parse_txt_records
from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, MxRecord, Resolver
from mailprime.message.spf import MAX_DNS_TERMS, SpfResult, check_host
from mailprime.services.dkim_keys import PublishedRecord, publish
from mailprime.services.doctor_records import (
    Finding,
    Status,
    blocklist_name,
    dmarc_tags,
    dmarc_text,
    looks_generic,
    name_covered,
    spf_suggestion,
    spf_term_name,
    txt_line,
)
from mailprime.storage.ports import DkimKeyStore

# A certificate expiring sooner than this is a WARN: renewal is due (Let's Encrypt renews at 30).
CERT_EXPIRY_WARNING = timedelta(days=14)
# RFC 7208 4.6.4 bounds SPF evaluation; includes nest at most this deep before we stop counting
# (a loop or a chain this deep is over the limit of 10 anyway).
MAX_SPF_DEPTH = MAX_DNS_TERMS
# PTR names looked at per address (RFC 7208 4.6.4 uses the same bound for validated names).
MAX_PTR_NAMES = 10
# Spamhaus (https://docs.spamhaus.com/datasets/docs/source/40-real-world-usage/PublicMirrors/
# MTAs/020-Policy.html): answers in 127.255.255.0/24 are errors (252 typo, 254 public resolver,
# 255 excessive queries), not listings.
_DNSBL_ERRORS = ipaddress.ip_network("127.255.255.0/24")
_DNSBL_LISTED = ipaddress.ip_network("127.0.0.0/24")


@dataclass(frozen=True, slots=True)
class DoctorRequest:
    """What to check. `sending_ips` empty means: the addresses of `hostname` (A and AAAA)."""

    domain: str
    hostname: str
    bounce_domain: str
    sending_ips: tuple[str, ...] = ()
    helo_name: str = ""  # the EHLO name of outbound mail; the PTR name should equal it
    blocklists: tuple[str, ...] = ()
    cert_path: Path | None = None
    now: datetime | None = None  # timezone-aware; the certificate is judged at this time
    timeout: float = 5.0  # each check's deadline: the DNS timeout
    expiry_warning: timedelta = CERT_EXPIRY_WARNING


@dataclass(frozen=True, slots=True)
class DoctorReport:
    domain: str
    sending_ips: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        """No FAIL (warnings allowed): the exit status of `mailprime doctor`."""
        return all(f.status is not Status.FAIL for f in self.findings)


class PolicyFetchError(DomainError):
    """The MTA-STS policy could not be fetched (connection, TLS, HTTP status, size, type)."""


class PolicyFetcher(Protocol):
    """The HTTPS side of MTA-STS, implemented in net/ and wired by the CLI."""

    async def fetch_policy(self, domain: str) -> str:
        """The body of https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.3: verified
        certificate, no redirects, 200 only); raises PolicyFetchError."""
        ...


# Running the checks ------------------------------------------------------------------------------

async def run_doctor(request: DoctorRequest, resolver: Resolver, keys: DkimKeyStore,
                     fetcher: PolicyFetcher) -> DoctorReport:
    """Runs every check concurrently and returns the findings in a stable order."""
    domain, bounce = request.domain.lower().rstrip("."), request.bounce_domain.lower().rstrip(".")
    now = request.now or datetime.now(UTC)
    ips, ip_findings = await _bounded("Sending addresses", request.hostname, request.timeout,
                                      _sending_ips(resolver, request))
    groups: list[Awaitable[list[Finding]]] = []
    for spf_domain in dict.fromkeys((domain, bounce)):
        groups.append(_checked("SPF", spf_domain, request.timeout, _spf(resolver, spf_domain, ips)))
    groups += [
        _checked("DKIM", domain, request.timeout, _dkim(resolver, keys, domain)),
        _checked("DMARC", domain, request.timeout, _dmarc(resolver, keys, domain, bounce)),
        *(_checked("FCrDNS", ip, request.timeout, _fcrdns(resolver, ip, request.helo_name))
          for ip in ips),
        _checked("MX", bounce, request.timeout, _mx(resolver, bounce, request.hostname)),
        _checked("MTA-STS", bounce, request.timeout, _mta_sts(resolver, fetcher, bounce, now)),
        _checked("TLS-RPT", bounce, request.timeout, _tls_rpt(resolver, bounce)),
        _checked("TLS certificate", request.hostname, request.timeout,
                 _certificate(resolver, request, bounce)),
        *(_checked("Blocklist", zone, request.timeout, _blocklist(resolver, zone, ips),
                   failure=Status.WARN) for zone in request.blocklists),
    ]
    results = await asyncio.gather(*groups)
    findings = [*ip_findings, *(f for group in results for f in group)]
    return DoctorReport(domain, ips, tuple(findings))


async def _bounded(check: str, subject: str, timeout: float,
                   work: Awaitable[tuple[tuple[str, ...], list[Finding]]]
                   ) -> tuple[tuple[str, ...], list[Finding]]:
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        return (), [Finding(check, subject, Status.FAIL,
                            f"could not tell: no answer within {timeout:g} s (DNS timeout)")]
    except DnsError as exc:
        return (), [Finding(check, subject, Status.FAIL, f"could not tell: {exc}")]


async def _checked(check: str, subject: str, timeout: float, work: Awaitable[list[Finding]],
                   failure: Status = Status.FAIL) -> list[Finding]:
    """One check under its deadline; a DNS failure or a timeout is that check's one finding."""
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        return [Finding(check, subject, failure, f"could not tell: no answer within {timeout:g} s "
                                                 "(DNS timeout)")]
    except DnsError as exc:
        return [Finding(check, subject, failure, f"could not tell: {exc}")]


async def _sending_ips(resolver: Resolver, request: DoctorRequest
                       ) -> tuple[tuple[str, ...], list[Finding]]:
    if request.sending_ips:
        return tuple(request.sending_ips), []
    v4, v6 = await asyncio.gather(_addresses(resolver, request.hostname, 4),
                                  _addresses(resolver, request.hostname, 6))
    found = [*v4, *v6]
    if not found:
        return (), [Finding("Sending addresses", request.hostname, Status.FAIL,
                            f"{request.hostname} has no A or AAAA record, and no sending address "
                            "was given (--sending-ip or [shaping] pools)",
                            f"{request.hostname}. IN A <this server's public address>")]
    return tuple(found), []


# SPF (RFC 7208) ----------------------------------------------------------------------------------

async def _spf_records(resolver: Resolver, domain: str) -> list[str]:
    """RFC 7208 4.5: the TXT records that are SPF version 1 (one expected)."""
    try:
        records = await resolver.txt(domain)
    except (DnsNxDomain, DnsNoData):
        return []
    texts = [r.joined.decode("ascii", errors="replace") for r in records]
    return [t for t in texts if t.lower() == "v=spf1" or t[:7].lower() == "v=spf1 "]


async def _spf_lookups(resolver: Resolver, text: str, seen: set[str], depth: int = 0) -> int:
    """RFC 7208 4.6.4: the DNS-querying terms of a record and of every include/redirect it leads
    to, counted on every path (a receiver checking an address that matches nothing walks them
    all). A target written with macros cannot be followed and counts once."""
    count = 0
    for word in text.split()[1:]:
        name = spf_term_name(word)
        if name in ("a", "mx", "ptr", "exists"):
            count += 1
        elif name in ("include", "redirect"):
            count += 1
            target = re.split(r"[:=]", word, maxsplit=1)[-1].lower().rstrip(".")
            if "%" in target or target in seen or depth >= MAX_SPF_DEPTH:
                continue
            seen.add(target)
            try:
                inner = await _spf_records(resolver, target)
            except DnsError:
                continue  # check_host reports it; the count stays a lower bound
            if len(inner) == 1:
                count += await _spf_lookups(resolver, inner[0], seen, depth + 1)
    return count


async def _spf_final(resolver: Resolver, text: str, depth: int = 0) -> str:
    """The qualifier of the record's `all` ("+", "-", "~", "?"), following redirect= when there
    is no all (RFC 7208 6.1); "" when the record ends without either (the result is neutral)."""
    words = text.split()[1:]
    for word in words:
        if spf_term_name(word) == "all":
            return word[0] if word[0] in "+-~?" else "+"
    for word in words:
        if word.lower().startswith("redirect=") and depth < MAX_SPF_DEPTH:
            inner = await _spf_records(resolver, word.split("=", 1)[1])
            return await _spf_final(resolver, inner[0], depth + 1) if len(inner) == 1 else ""
    return ""


async def _spf(resolver: Resolver, domain: str, ips: Sequence[str]) -> list[Finding]:
    """Gmail, Yahoo and Microsoft require SPF to pass for the envelope domain: one record
    (RFC 7208 4.5), valid, covering every sending address, within 10 DNS-querying terms
    (4.6.4), ending in -all or ~all (anything else lets the world pass or stay neutral)."""
    records = await _spf_records(resolver, domain)
    if not records:
        return [Finding("SPF", domain, Status.FAIL, "no SPF record",
                        txt_line(domain, spf_suggestion(None, ips)) if ips else "")]
    if len(records) > 1:
        # One record with the terms of all of them (each once), ending as the first one ends.
        terms = [w for r in records for w in r.split()[1:]
                 if spf_term_name(w) != "all" and not w.lower().startswith("redirect=")]
        last = [w for w in records[0].split()[1:] if spf_term_name(w) == "all"][:1]
        merged = " ".join(["v=spf1", *dict.fromkeys(terms), *last])
        return [Finding("SPF", domain, Status.FAIL,
                        f"{len(records)} SPF records (RFC 7208 4.5: permerror); publish one",
                        txt_line(domain, spf_suggestion(merged, ips)))]
    record = records[0]
    verdicts = await asyncio.gather(*(check_host(resolver, ip, domain, f"postmaster@{domain}")
                                      for ip in ips))
    errors = [v for v in verdicts if v.result in (SpfResult.PERMERROR, SpfResult.TEMPERROR)]
    if errors:
        return [Finding("SPF", domain, Status.FAIL,
                        f"{record!r} gives {errors[0].result}: {errors[0].reason}")]
    lookups = await _spf_lookups(resolver, record, {domain})
    final = await _spf_final(resolver, record)
    missing = [ip for ip, v in zip(ips, verdicts, strict=True) if v.result is not SpfResult.PASS]
    if lookups > MAX_DNS_TERMS:
        return [Finding("SPF", domain, Status.FAIL,
                        f"{record!r} needs {lookups} DNS look-ups, over the limit of "
                        f"{MAX_DNS_TERMS} (RFC 7208 4.6.4: receivers answer permerror); replace "
                        "includes by the ip4:/ip6: ranges they stand for")]
    if missing:
        results = ", ".join(f"{ip} ({v.result})" for ip, v in zip(ips, verdicts, strict=True)
                            if v.result is not SpfResult.PASS)
        return [Finding("SPF", domain, Status.FAIL, f"{record!r} does not cover {results}",
                        txt_line(domain, spf_suggestion(record, missing)))]
    against = f"covers {', '.join(ips)}" if ips else "is not checked against any address"
    covered = f"{record!r} {against}; {lookups}/{MAX_DNS_TERMS} look-ups"
    if final == "+":
        return [Finding("SPF", domain, Status.FAIL,
                        f"{covered}, but ends in +all: anyone passes as {domain}",
                        txt_line(domain, spf_suggestion(record, [])))]
    if final in ("?", ""):
        ending = "?all" if final == "?" else "no all"
        return [Finding("SPF", domain, Status.WARN,
                        f"{covered}; ends in {ending}: other senders get neutral, not fail",
                        txt_line(domain, spf_suggestion(record, [])))]
    return [Finding("SPF", domain, Status.OK, f"{covered}; ends in {final}all")]


# DKIM (RFC 6376) ---------------------------------------------------------------------------------

def _p_value(text: str) -> tuple[str, bytes | None]:
    """(k=, decoded p=) of a key record; p= None when the record is unreadable."""
    try:
        tags = parse_tag_list(text)
        return tags.get("k", "rsa").lower(), base64.b64decode(re.sub(r"\s", "", tags.get("p", "")),
                                                              validate=True)
    except (ValueError, binascii.Error):
        return "", None


async def _dkim(resolver: Resolver, keys: DkimKeyStore, domain: str) -> list[Finding]:
    """Each key we sign (or will sign) with must be published at <selector>._domainkey.<domain>
    with exactly our public key (RFC 6376 3.6.2.1); a key that differs fails every signature."""
    stored = [k for k in await keys.list_dkim_keys(domain) if k.state is not DkimKeyState.RETIRED]
    findings: list[Finding] = []
    if not any(k.active for k in stored):
        findings.append(Finding("DKIM", domain, Status.FAIL,
                                f"no active DKIM key: mail from {domain} goes out unsigned",
                                f"mailprime dkim keygen {domain}"))
    records: list[PublishedRecord] = []
    for key in stored:
        try:
            records.append(publish(key))
        except DkimKeyError as exc:  # a damaged row must not hide the other findings
            findings.append(Finding("DKIM", key.selector, Status.FAIL,
                                    f"the stored private key cannot be read: {exc}",
                                    f"mailprime dkim keygen {domain}"))
    checks = await asyncio.gather(*(_dkim_key(resolver, r) for r in records),
                                  return_exceptions=True)
    for record, outcome in zip(records, checks, strict=True):
        key = record.key
        if isinstance(outcome, DnsError):
            findings.append(Finding("DKIM", key.selector, Status.FAIL, f"could not tell: {outcome}"))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            status, found = outcome
            if status is Status.FAIL and not key.active:
                status, found = Status.WARN, found + " (key not signing yet: publish, then activate)"
            findings.append(Finding("DKIM", key.selector, status, f"{key.key_type.value}: {found}",
                                    record.zone_line if status is not Status.OK else ""))
    return findings


async def _dkim_key(resolver: Resolver, record: PublishedRecord) -> tuple[Status, str]:
    try:
        answers = await resolver.txt(record.name)
    except (DnsNxDomain, DnsNoData):
        return Status.FAIL, f"no TXT record at {record.name}"
    if len(answers) != 1:
        return Status.FAIL, f"{len(answers)} TXT records at {record.name} (one expected)"
    want_k, want_p = _p_value(record.record)
    have_k, have_p = _p_value(answers[0].text)
    if have_p is None:
        return Status.FAIL, f"the record at {record.name} does not parse"
    if not have_p:
        return Status.FAIL, f"the record at {record.name} is revoked (empty p=)"
    if (have_k, have_p) != (want_k, want_p):
        return Status.FAIL, f"the record at {record.name} holds another key"
    return Status.OK, f"{record.name} publishes our key"


# DMARC (RFC 7489) --------------------------------------------------------------------------------

async def _dmarc(resolver: Resolver, keys: DkimKeyStore, domain: str, bounce: str) -> list[Finding]:
    """Gmail and Yahoo require of bulk senders a DMARC record (p=none is enough) and a From
    domain aligned with SPF or DKIM (RFC 7489 3.1, relaxed: same organizational domain)."""
    findings, record = await _dmarc_record(resolver, domain)
    strict_spf = record.strict_spf if record is not None else False  # 6.3: relaxed by default
    active = [k for k in await keys.list_dkim_keys(domain) if k.active]
    spf_aligned = is_aligned(bounce, domain, strict=strict_spf)
    mode = "strict" if strict_spf else "relaxed"
    spf_text = f"SPF {'aligned' if spf_aligned else 'NOT aligned'} (envelope {bounce}, {mode})"
    # Our keys sign with d= the From domain itself, aligned in either mode.
    dkim_text = (f"DKIM aligned (d={domain})" if active else "DKIM NOT aligned (no active key)")
    summary = f"From {domain}: {spf_text}; {dkim_text}"
    if not spf_aligned and not active:
        findings.append(Finding("DMARC alignment", domain, Status.FAIL, summary,
                                f"mailprime dkim keygen {domain}"))
    elif not spf_aligned or not active:
        findings.append(Finding("DMARC alignment", domain, Status.WARN,
                                summary + ": one aligned pass is enough, two survive a failure"))
    else:
        findings.append(Finding("DMARC alignment", domain, Status.OK, summary))
    return findings


async def _dmarc_record(resolver: Resolver, domain: str) -> tuple[list[Finding], DmarcRecord | None]:
    """RFC 7489 6.6.3: the record at _dmarc.<domain>, else at its organizational domain."""
    name, where = f"_dmarc.{domain}", domain
    texts = await _dmarc_records(resolver, name)
    org = organizational_domain(domain)
    if not texts and org != domain:
        texts, where = await _dmarc_records(resolver, f"_dmarc.{org}"), org
    default = f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"
    if not texts:
        return [Finding("DMARC", domain, Status.FAIL, f"no DMARC record at {name}",
                        txt_line(name, default))], None
    if len(texts) > 1:
        return [Finding("DMARC", domain, Status.FAIL,
                        f"{len(texts)} DMARC records at _dmarc.{where} (RFC 7489 6.6.3: as none)",
                        txt_line(f"_dmarc.{where}", texts[0]))], None
    text, tags = texts[0], dmarc_tags(texts[0])
    parsed = parse_record(text)
    names = {n for n, _ in tags}
    if parsed is None or "p" not in names:
        return [Finding("DMARC", domain, Status.FAIL, f"{text!r} at _dmarc.{where} is not a valid "
                        "DMARC record (v=DMARC1 first, then p=none|quarantine|reject)",
                        txt_line(f"_dmarc.{where}", default))], None
    findings: list[Finding] = []
    # RFC 7489 6.3: a subdomain found through its organizational domain gets sp= when present.
    tag, policy = "p", parsed.policy
    if where != domain and parsed.subdomain_policy is not None:
        tag, policy = "sp", parsed.subdomain_policy
    if policy is Disposition.NONE:
        findings.append(Finding("DMARC", domain, Status.WARN,
                                f"{text!r}: {tag}=none is enough for Gmail and Yahoo, but "
                                "quarantine or reject protects the domain",
                                txt_line(f"_dmarc.{where}", dmarc_text(tags, **{tag: "quarantine"}))))
    if "rua" not in names:
        findings.append(Finding("DMARC", domain, Status.WARN,
                                f"{text!r}: no rua=, so no aggregate reports reach you",
                                txt_line(f"_dmarc.{where}",
                                         dmarc_text(tags, rua=f"mailto:postmaster@{domain}"))))
    if not findings:
        findings.append(Finding("DMARC", domain, Status.OK, f"{text!r} at _dmarc.{where}"))
    return findings, parsed


async def _dmarc_records(resolver: Resolver, name: str) -> list[str]:
    try:
        answers = await resolver.txt(name)
    except (DnsNxDomain, DnsNoData):
        return []
    return [a.text for a in answers if a.text.replace(" ", "")[:8].lower() == "v=dmarc1"]


# Reverse DNS -------------------------------------------------------------------------------------

async def _addresses(resolver: Resolver, name: str, version: int) -> tuple[str, ...]:
    try:
        return await (resolver.a(name) if version == 4 else resolver.aaaa(name))
    except (DnsNxDomain, DnsNoData):
        return ()


async def _fcrdns(resolver: Resolver, ip: str, helo: str) -> list[Finding]:
    """Gmail and Yahoo require forward-confirmed reverse DNS for every sending address: a PTR
    name whose A/AAAA gives the address back; Yahoo wants it non-generic, and the HELO name
    should be that name."""
    address = ipaddress.ip_address(ip)
    wanted = helo or "<this server's host name>"
    try:
        names = (await resolver.ptr(ip))[:MAX_PTR_NAMES]
    except (DnsNxDomain, DnsNoData):
        return [Finding("FCrDNS", ip, Status.FAIL, "no PTR record (ask the owner of the address "
                        "block, usually the hosting provider, to set it)",
                        f"{address.reverse_pointer}. IN PTR {wanted}.")]
    forward = await asyncio.gather(*(_addresses(resolver, n, address.version) for n in names))
    confirmed = [n for n, addrs in zip(names, forward, strict=True)
                 if any(ipaddress.ip_address(a) == address for a in addrs)]
    if not confirmed:
        seen = "; ".join(f"{n} -> {', '.join(a) or 'nothing'}" for n, a in zip(names, forward, strict=True))
        kind = "A" if address.version == 4 else "AAAA"
        return [Finding("FCrDNS", ip, Status.FAIL, f"PTR {', '.join(names)} does not resolve back "
                        f"to {ip} ({seen})", f"{names[0]}. IN {kind} {ip}")]
    name = confirmed[0]
    if looks_generic(name, ip):
        return [Finding("FCrDNS", ip, Status.WARN, f"{name} confirms {ip} but looks generic (an "
                        "ISP default): Yahoo asks for a name of your own",
                        f"{address.reverse_pointer}. IN PTR {wanted}.")]
    if helo and name != helo.lower():
        return [Finding("FCrDNS", ip, Status.WARN, f"{name} confirms {ip}, but outbound mail says "
                        f"HELO {helo}: set [delivery] helo_name = \"{name}\" or change the PTR")]
    return [Finding("FCrDNS", ip, Status.OK, f"{ip} -> {name} -> {ip}")]


# MX, MTA-STS, TLS-RPT of the bounce domain -------------------------------------------------------

async def _mx_records(resolver: Resolver, domain: str) -> tuple[MxRecord, ...]:
    try:
        return tuple(sorted(await resolver.mx(domain)))
    except (DnsNxDomain, DnsNoData):
        return ()


async def _our_hosts(resolver: Resolver, records: Sequence[MxRecord], hostname: str) -> list[str]:
    """The MX hosts that are this server: named as it, or sharing one of its addresses."""
    hostname = hostname.lower()
    ours_by_address: set[str] = set()
    for version in (4, 6):
        ours_by_address.update(await _addresses(resolver, hostname, version))
    hosts = [r.exchange for r in records if not r.is_null]
    results = await asyncio.gather(*(_addresses(resolver, h, v) for h in hosts for v in (4, 6)))
    found = []
    for i, host in enumerate(hosts):
        if host == hostname or ours_by_address & {*results[2 * i], *results[2 * i + 1]}:
            found.append(host)
    return found


async def _mx(resolver: Resolver, bounce: str, hostname: str) -> list[Finding]:
    """Asynchronous bounces and complaints come back to the envelope (bounce) domain: it needs an
    MX (RFC 5321 5.1), and it should be this server, which turns them into events."""
    records = await _mx_records(resolver, bounce)
    fix = f"{bounce}. IN MX 10 {hostname}."
    if not records:
        return [Finding("MX", bounce, Status.FAIL, "no MX record: bounces cannot come back", fix)]
    if all(r.is_null for r in records):
        return [Finding("MX", bounce, Status.FAIL, "null MX (RFC 7505): the domain takes no mail, "
                        "bounces are lost", fix)]
    listed = ", ".join(f"{r.preference} {r.exchange}" for r in records if not r.is_null)
    ours = await _our_hosts(resolver, records, hostname)
    if not ours:
        return [Finding("MX", bounce, Status.WARN, f"MX {listed}: none is this server "
                        f"({hostname}); bounces reach mailprime only if that host forwards them",
                        fix)]
    return [Finding("MX", bounce, Status.OK, f"MX {listed}")]


async def _mta_sts(resolver: Resolver, fetcher: PolicyFetcher, bounce: str,
                   now: datetime) -> list[Finding]:
    """MTA-STS (RFC 8461) makes senders insist on TLS to our MX: recommended (WARN when absent),
    but a broken one (a TXT record without a policy, or a policy that names other MX hosts)
    makes senders that enforce it refuse to deliver our bounces (FAIL)."""
    name = f"_mta-sts.{bounce}"
    records = await _mx_records(resolver, bounce)
    hosts = [r.exchange for r in records if not r.is_null]
    serve = "\n".join([
        f"# https://mta-sts.{bounce}/.well-known/mta-sts.txt (text/plain; certificate for "
        f"mta-sts.{bounce}); 'testing' first, 'enforce' once TLS reports are clean:",
        "version: STSv1", "mode: testing", *(f"mx: {h}" for h in hosts), "max_age: 604800",
        "# then, and with a new id each time the policy changes:",
        txt_line(name, f"v=STSv1; id={now:%Y%m%d%H%M%S}")])
    try:
        answers = await resolver.txt(name)
    except (DnsNxDomain, DnsNoData):
        answers = ()
    texts = [a.text for a in answers if a.text.replace(" ", "").lower().startswith("v=stsv1")]
    if not texts:
        return [Finding("MTA-STS", bounce, Status.WARN, "not published (recommended: senders "
                        "then insist on TLS to your MX)", serve)]
    try:
        parse_txt_records(texts)
    except PolicyError:
        return [Finding("MTA-STS", bounce, Status.FAIL, f"{name}: {texts!r} is not one "
                        "'v=STSv1; id=...' record (RFC 8461 3.1)", serve)]
    try:
        policy = parse_policy(await fetcher.fetch_policy(bounce))
    except PolicyFetchError as exc:
        return [Finding("MTA-STS", bounce, Status.FAIL, f"{name} is published but the policy "
                        f"cannot be fetched: {exc.message}", serve)]
    except PolicyError as exc:
        return [Finding("MTA-STS", bounce, Status.FAIL, f"the policy is invalid: {exc}", serve)]
    mode, patterns, max_age = policy.mode.value, policy.mx, policy.max_age
    unmatched = [h for h in hosts if not policy.matches(h)]
    if mode != "none" and unmatched:
        return [Finding("MTA-STS", bounce, Status.FAIL, f"policy ({mode}) names "
                        f"{', '.join(patterns)}, not the MX {', '.join(unmatched)}: senders that "
                        "enforce it will not deliver", serve)]
    status = Status.WARN if mode == "none" else Status.OK
    return [Finding("MTA-STS", bounce, status, f"mode {mode}, mx {', '.join(patterns) or '-'}, "
                    f"max_age {max_age}")]


async def _tls_rpt(resolver: Resolver, bounce: str) -> list[Finding]:
    """TLS-RPT (RFC 8460 3): where senders report TLS failures to our MX; recommended."""
    name = f"_smtp._tls.{bounce}"
    try:
        answers = await resolver.txt(name)
    except (DnsNxDomain, DnsNoData):
        answers = ()
    texts = [a.text for a in answers if a.text.replace(" ", "").lower().startswith("v=tlsrptv1")]
    if len(texts) == 1 and "rua=" in texts[0].replace(" ", "").lower():
        return [Finding("TLS-RPT", bounce, Status.OK, texts[0])]
    found = "not published" if not texts else f"{texts!r} is not one record with rua="
    return [Finding("TLS-RPT", bounce, Status.WARN, f"{found} (recommended)",
                    txt_line(name, f"v=TLSRPTv1; rua=mailto:postmaster@{bounce}"))]


# The TLS certificate -----------------------------------------------------------------------------

async def _certificate(resolver: Resolver, request: DoctorRequest, bounce: str) -> list[Finding]:
    """Senders using STARTTLS (Gmail requires TLS) and MTA-STS verify our certificate: valid
    now, not about to expire, naming the host and the MX names that are this server."""
    subject, path = request.hostname, request.cert_path
    if path is None:
        return [Finding("TLS certificate", subject, Status.FAIL, "no certificate configured")]
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        return [Finding("TLS certificate", subject, Status.FAIL,
                        f"cannot read {path}: {exc.strerror or exc}")]
    except ValueError:
        return [Finding("TLS certificate", subject, Status.FAIL, f"{path} holds no PEM certificate")]
    cert = chain[0]
    now = request.now or datetime.now(UTC)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    ours = await _our_hosts(resolver, await _mx_records(resolver, bounce), request.hostname)
    needed = list(dict.fromkeys([request.hostname.lower(), *ours]))
    uncovered = [n for n in needed if not name_covered(n, names)]
    until = cert.not_valid_after_utc
    found = f"{path}: {', '.join(names) or 'no DNS name'}, valid until {until:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return [Finding("TLS certificate", subject, Status.FAIL, f"{found}: not valid before "
                        f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")]
    if until <= now:
        return [Finding("TLS certificate", subject, Status.FAIL, f"{found}: expired")]
    if uncovered:
        return [Finding("TLS certificate", subject, Status.FAIL,
                        f"{found}: does not name {', '.join(uncovered)}")]
    if until - now < request.expiry_warning:
        return [Finding("TLS certificate", subject, Status.WARN,
                        f"{found}: expires in {(until - now).days} days: renew it")]
    if cert.issuer == cert.subject:
        return [Finding("TLS certificate", subject, Status.WARN, f"{found}: self-signed, so "
                        "senders that verify (MTA-STS) refuse it: use one from a public CA")]
    return [Finding("TLS certificate", subject, Status.OK, found)]


# DNS blocklists ----------------------------------------------------------------------------------

async def _listing(resolver: Resolver, ip: str, zone: str) -> tuple[Status, str]:
    name = blocklist_name(ip, zone)
    try:
        answers = await resolver.a(name)
    except (DnsNxDomain, DnsNoData):
        return Status.OK, f"{ip} not listed"
    except DnsError as exc:
        return Status.WARN, f"{ip}: could not ask the list ({exc})"
    codes = [ipaddress.ip_address(a) for a in answers]
    if any(c in _DNSBL_ERRORS for c in codes):
        return Status.WARN, (f"{ip}: blocklist refused the query (public resolver?): answered "
                             f"{', '.join(map(str, codes))}; use a resolver of your own")
    if any(c in _DNSBL_LISTED for c in codes):
        try:
            reason = " ".join(t.text for t in await resolver.txt(name))
        except DnsError:
            reason = ""
        return Status.FAIL, f"{ip} LISTED ({', '.join(map(str, codes))})" + \
            (f": {reason}" if reason else "")
    return Status.WARN, f"{ip}: unexpected answer {', '.join(map(str, codes))}"


async def _blocklist(resolver: Resolver, zone: str, ips: Sequence[str]) -> list[Finding]:
    """RFC 5782: a sending address listed on a DNS blocklist gets its mail refused by every
    receiver that uses the list; 127.0.0.x answers are listings, 127.255.255.x errors."""
    if not ips:
        return []
    outcomes = await asyncio.gather(*(_listing(resolver, ip, zone) for ip in ips))
    worst = max((s for s, _ in outcomes), key=[Status.OK, Status.WARN, Status.FAIL].index)
    return [Finding("Blocklist", zone, worst, "; ".join(text for _, text in outcomes),
                    f"request delisting at the list's web site ({zone})"
                    if worst is Status.FAIL else "")]


__all__ = [
    "CERT_EXPIRY_WARNING",
    "DoctorReport",
    "DoctorRequest",
    "Finding",
    "PolicyFetchError",
    "PolicyFetcher",
    "Status",
    "run_doctor",
]
