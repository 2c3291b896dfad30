"""DMARC evaluation (RFC 7489): policy discovery over the DNS port, identifier alignment, and the
disposition a receiver applies.

Theory of operation. `check_dmarc` takes the RFC5322.From domain (exactly one author address,
else `permerror`, 6.6.1), then

1. discovers the policy (6.6.3): the TXT record at _dmarc.<From domain>; when that name has no
   DMARC record, the one at _dmarc.<organizational domain>. A name with several DMARC records has
   none. No record anywhere -> `none`; a DNS failure -> `temperror`;
2. checks alignment (3.1): SPF is aligned when it passed for a domain equal to (strict, aspf=s)
   or in the same organizational domain as (relaxed, the default) the From domain; DKIM likewise
   for the d= of any passing signature (adkim). Either aligned pass -> `pass`, else `fail`;
3. on `fail`, picks the policy (6.3): sp= when the record was found at the organizational domain
   for a subdomain (p= when sp= is absent), p= otherwise; then samples pct= (6.6.4): a message
   outside the sample gets the next weaker policy (reject -> quarantine, quarantine -> none). The
   random source is injected so tests are deterministic.

The organizational domain (3.2) is the public suffix plus one label, from the Public Suffix List
the `publicsuffixlist` package bundles (no network access at run time).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from mailprime.message.dkim_verify import DkimResult, DkimVerdict
from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, Resolver
from mailprime.message.spf import SpfResult, SpfVerdict

# RFC 7489 6.3 pct: an integer from 0 to 100.
MAX_PCT = 100
# A From field longer than this is not parsed (RFC 5322 sets no limit; the work must be bounded).
MAX_FROM_LENGTH = 8192

_PSL = PublicSuffixList()


class DmarcResult(enum.StrEnum):
    """RFC 7489 11.2 / RFC 8601 2.7: the dmarc= result."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 (a result, not a password)
    FAIL = "fail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Disposition(enum.StrEnum):
    """RFC 7489 6.3 p=/sp= values, and what a receiver does with a failing message."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record we act on (RFC 7489 6.3); reporting tags are not used."""

    policy: Disposition
    subdomain_policy: Disposition | None = None
    strict_dkim: bool = False
    strict_spf: bool = False
    pct: int = MAX_PCT


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """The DMARC outcome: `policy` is the published one that applied (None without a record),
    `disposition` what to do after pct sampling (always NONE unless the result is FAIL)."""

    result: DmarcResult
    from_domain: str = ""
    policy: Disposition | None = None
    disposition: Disposition = Disposition.NONE
    record_domain: str = ""  # where the record was found
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the registered domain (public suffix + one label); the domain itself when
    it is a public suffix or has no suffix the list knows."""
    domain = domain.lower().rstrip(".")
    found = _PSL.privatesuffix(domain)
    return found if found else domain


def is_aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    """RFC 7489 3.1.1 / 3.1.2: identical (strict) or in one organizational domain (relaxed)."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not domain or not from_domain:
        return False
    if strict:
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record (RFC 7489 6.3, 6.4), or None when it is not a valid one. v=DMARC1 must come
    first; an invalid or missing p= makes p=none when rua= is present (6.6.3), else no record."""
    parts = [p.strip(" \t") for p in text.split(";")]
    tags: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            return None
        tags.setdefault(name.strip(" \t").lower(), value.strip(" \t"))
    first = parts[0].replace(" ", "").replace("\t", "") if parts else ""
    if first != "v=DMARC1":
        return None
    policy = _disposition(tags.get("p", ""))
    if policy is None:
        if "rua" not in tags:
            return None
        policy = Disposition.NONE
    pct_text = tags.get("pct", str(MAX_PCT))
    pct = int(pct_text) if pct_text.isdigit() and pct_text.isascii() else MAX_PCT
    return DmarcRecord(
        policy=policy,
        subdomain_policy=_disposition(tags.get("sp", "")),
        strict_dkim=tags.get("adkim", "r").lower() == "s",
        strict_spf=tags.get("aspf", "r").lower() == "s",
        pct=min(pct, MAX_PCT),
    )


def _disposition(text: str) -> Disposition | None:
    try:
        return Disposition(text.lower())
    except ValueError:
        return None


def author_domains(from_values: Sequence[str]) -> list[str]:
    """The domains of every author mailbox in the From field(s) given (RFC 5322 3.6.2), lower
    case A-labels; an address without a domain counts as "" (so that it cannot be skipped)."""
    domains = []
    for value in from_values:
        for _name, address in getaddresses([value[:MAX_FROM_LENGTH]]):
            if not address:
                continue
            domain = address.rpartition("@")[2].strip().rstrip(".").lower()
            try:
                domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
            except UnicodeError:
                domain = ""
            domains.append(domain)
    return domains


async def fetch_record(resolver: Resolver, from_domain: str) -> tuple[DmarcRecord, str] | None:
    """RFC 7489 6.6.3: (record, the domain it was found at) or None; DnsError on a DNS failure."""
    record = await _record_at(resolver, from_domain)
    if record is not None:
        return record, from_domain
    org = organizational_domain(from_domain)
    if org != from_domain:
        record = await _record_at(resolver, org)
        if record is not None:
            return record, org
    return None


async def _record_at(resolver: Resolver, domain: str) -> DmarcRecord | None:
    try:
        answers = await resolver.txt(f"_dmarc.{domain}")
    except (DnsNxDomain, DnsNoData):
        return None
    texts = [a.text for a in answers if a.text.replace(" ", "")[:8].lower() == "v=dmarc1"]
    if len(texts) != 1:
        return None  # 6.6.3: several records are as none
    return parse_record(texts[0])


async def check_dmarc(resolver: Resolver, from_values: Sequence[str], spf: SpfVerdict,
                      dkim: Sequence[DkimVerdict],
                      sample: Callable[[], float] = random.random, *,
                      domains: Sequence[str] | None = None) -> DmarcVerdict:
    """The DMARC verdict for a message whose From field values are `from_values` (one per From
    field). `sample()` returns a float in [0, 1) for pct= sampling. `domains`: what
    `author_domains(from_values)` gave, when the caller has it already (the MX parses the From
    field once per message: the address parser is the costly part here)."""
    if len(from_values) != 1:
        return DmarcVerdict(DmarcResult.PERMERROR, reason=f"{len(from_values)} From fields")
    if domains is None:
        domains = author_domains(from_values)
    if len(domains) != 1:
        return DmarcVerdict(DmarcResult.PERMERROR, reason=f"{len(domains)} From addresses (RFC 7489 6.6.1)")
    from_domain = domains[0]
    if not from_domain or "." not in from_domain:
        return DmarcVerdict(DmarcResult.PERMERROR, from_domain, reason="From has no usable domain")
    try:
        found = await fetch_record(resolver, from_domain)
    except DnsError as exc:
        return DmarcVerdict(DmarcResult.TEMPERROR, from_domain, reason=f"policy look-up failed: {exc}")
    if found is None:
        return DmarcVerdict(DmarcResult.NONE, from_domain, reason="no DMARC record")
    record, record_domain = found
    spf_aligned = spf.result is SpfResult.PASS and is_aligned(spf.domain, from_domain,
                                                              strict=record.strict_spf)
    dkim_aligned = any(v.result is DkimResult.PASS and is_aligned(v.domain, from_domain,
                                                                  strict=record.strict_dkim)
                       for v in dkim)
    policy = record.policy
    if record_domain != from_domain and record.subdomain_policy is not None:
        policy = record.subdomain_policy
    if spf_aligned or dkim_aligned:
        return DmarcVerdict(DmarcResult.PASS, from_domain, policy, Disposition.NONE, record_domain,
                            spf_aligned, dkim_aligned, "aligned " + ("SPF" if spf_aligned else "DKIM"))
    disposition = policy
    if record.pct < MAX_PCT and sample() * MAX_PCT >= record.pct:
        disposition = _weaker(policy)  # RFC 7489 6.6.4: outside the sample
    return DmarcVerdict(DmarcResult.FAIL, from_domain, policy, disposition, record_domain, False, False,
                        "neither SPF nor DKIM aligned with a pass")


def _weaker(policy: Disposition) -> Disposition:
    if policy is Disposition.REJECT:
        return Disposition.QUARANTINE
    return Disposition.NONE


__all__ = [
    "Disposition",
    "DmarcRecord",
    "DmarcResult",
    "DmarcVerdict",
    "author_domains",
    "check_dmarc",
    "fetch_record",
    "is_aligned",
    "organizational_domain",
    "parse_record",
]
