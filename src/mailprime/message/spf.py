"""SPF verification (RFC 7208): check_host() over the DNS port, IPv4 and IPv6.

Theory of operation. `check_spf` picks the identity (RFC 7208 2.4: the MAIL FROM, or
postmaster@<HELO> when the reverse-path is null) and calls `check_host`, which

1. refuses a malformed domain with `none` (4.3);
2. fetches the TXT records and keeps those that are SPF version 1 (4.5): none -> `none`, more
   than one -> `permerror`, a DNS failure -> `temperror`;
3. parses the whole record first (4.6): any syntax error anywhere, a second redirect= or exp=,
   or a bad macro -> `permerror` without evaluating anything;
4. evaluates the mechanisms left to right (4.6.2): the first that matches gives its qualifier's
   result; `include` recurses (5.2); when none matches, `redirect=` recurses (6.1), else the
   result is `neutral` (4.7).

One `_Budget` is shared by the whole evaluation, recursion included, and enforces the limits of
RFC 7208 4.6.4: at most 10 terms that cause DNS look-ups (include, a, mx, ptr, exists, redirect),
at most 2 "void" look-ups (NXDOMAIN or no answer), at most 10 MX names per mx mechanism (more is
permerror) and the first 10 PTR names only. Exceeding a limit raises `_PermError`, which ends the
evaluation with `permerror`; a DNS failure raises `_TempError` -> `temperror`. Macros (7) are
expanded in domain-specs; exp= is parsed but never expanded (we do not send explanations).
"""

from __future__ import annotations

import enum
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field

from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, Resolver

# RFC 7208 4.6.4: DNS-querying terms per check, void look-ups, and address look-ups per MX/PTR.
MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
# RFC 7208 7.3: an expanded domain-spec longer than 253 octets loses labels on the left.
MAX_DOMAIN_LENGTH = 253
# RFC 1035 2.3.4: a label is at most 63 octets.
MAX_LABEL = 63
# A record is a TXT record; RFC 7208 3.4 advises keeping it within 450 octets, but records of a
# few kilobytes exist (TCP answers). We parse at most this much of one to bound the work.
MAX_RECORD_LENGTH = 4096


class SpfResult(enum.StrEnum):
    """RFC 7208 2.6: the seven results, spelled as Authentication-Results writes them."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"  # noqa: S105 (a result, not a password)
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """The result of one check: which identity (`mailfrom` or `helo`, RFC 8601 2.7.2), the
    domain whose policy decided, the sender used for macros, and a short reason for logs."""

    result: SpfResult
    identity: str
    domain: str
    sender: str
    reason: str = ""


_QUALIFIERS = {"+": SpfResult.PASS, "-": SpfResult.FAIL, "~": SpfResult.SOFTFAIL, "?": SpfResult.NEUTRAL}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
# RFC 7208 7.1 macro-string: visible characters but "%", or a macro-expand.
_MACRO_STRING = re.compile(
    r"(?:[\x21-\x24\x26-\x7e]|%\{[slodiphcrtv][0-9]*r?[.\-+,/_=]*\}|%%|%_|%-)*", re.IGNORECASE
)
_MACRO = re.compile(r"%\{([a-zA-Z])([0-9]*)([rR]?)([.\-+,/_=]*)\}|%%|%_|%-")
# RFC 7208 12 "name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )" for modifiers.
_MODIFIER = re.compile(r"^([a-zA-Z][a-zA-Z0-9\-_.]*)=(.*)$", re.DOTALL)
# RFC 7208 12: ip4-cidr-length / ip6-cidr-length, no leading zero.
_CIDR = re.compile(r"^(.*?)(?:/(0|[1-9][0-9]{0,2}))?(?://(0|[1-9][0-9]{0,2}))?$", re.DOTALL)
_TOPLABEL = re.compile(r"^(?=.*[a-zA-Z])[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


@dataclass(slots=True)
class _Budget:
    """The RFC 7208 4.6.4 counters, shared across include/redirect recursion."""

    dns_terms: int = 0
    void_lookups: int = 0

    def charge_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms (RFC 7208 4.6.4)")

    def charge_void(self) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise _PermError(f"more than {MAX_VOID_LOOKUPS} void look-ups (RFC 7208 4.6.4)")


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: SpfResult
    name: str  # mechanism name, lower case
    domain_spec: str  # "" when absent
    cidr4: int
    cidr6: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # ip4 / ip6


@dataclass(frozen=True, slots=True)
class _Record:
    terms: tuple[_Term, ...]
    redirect: str | None


@dataclass(slots=True)
class _Context:
    """What macros read (RFC 7208 7.2) and where look-ups go."""

    resolver: Resolver
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    budget: _Budget = field(default_factory=_Budget)
    validated_name: str | None = None  # the %{p} value, computed once


# Entry points ----------------------------------------------------------------------------------

async def check_spf(resolver: Resolver, ip: str, helo: str, mail_from: str) -> SpfVerdict:
    """The MAIL FROM identity's verdict; with a null reverse-path, postmaster@<HELO>'s (2.4)."""
    helo = helo.strip().rstrip(".").lower()
    if mail_from.strip("<> "):
        sender = mail_from.strip("<> ")
        identity = "mailfrom"
    else:
        sender = f"postmaster@{helo}"
        identity = "helo"
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "postmaster", sender  # 4.3: no local-part means "postmaster"
    if not local:
        local = "postmaster"
    domain = domain.rstrip(".").lower()
    sender = f"{local}@{domain}"
    return await check_host(resolver, ip, domain, sender, helo, identity=identity)


async def check_host(resolver: Resolver, ip: str, domain: str, sender: str, helo: str = "",
                     *, identity: str = "mailfrom") -> SpfVerdict:
    """RFC 7208 4: check_host(<ip>, <domain>, <sender>) and the verdict around it."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return SpfVerdict(SpfResult.PERMERROR, identity, domain, sender, f"bad client IP {ip!r}")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # RFC 7208 5: an IPv4-mapped client is an IPv4 client
    context = _Context(resolver, address, sender, helo.strip().rstrip(".").lower())
    try:
        result, reason = await _check_host(context, domain.strip().rstrip(".").lower())
    except _PermError as exc:
        result, reason = SpfResult.PERMERROR, str(exc)
    except _TempError as exc:
        result, reason = SpfResult.TEMPERROR, str(exc)
    return SpfVerdict(result, identity, domain, sender, reason)


# check_host() ----------------------------------------------------------------------------------

def _is_valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a fully qualified name of valid labels (else the result is none)."""
    if not domain or len(domain) > MAX_DOMAIN_LENGTH or "." not in domain:
        return False
    labels = domain.split(".")
    return all(0 < len(label) <= MAX_LABEL for label in labels) and domain.isascii()


async def _check_host(context: _Context, domain: str) -> tuple[SpfResult, str]:
    if not _is_valid_domain(domain):
        return SpfResult.NONE, f"{domain!r} is not a valid domain"
    text = await _fetch_record(context, domain)
    if text is None:
        return SpfResult.NONE, f"no SPF record at {domain}"
    record = _parse(text)
    for term in record.terms:
        if await _matches(context, term, domain):
            return term.qualifier, f"{domain}: matched {term.name}"
    if record.redirect is not None:
        context.budget.charge_term()
        target = await _expand(record.redirect, context, domain)
        result, reason = await _check_host(context, target)
        if result is SpfResult.NONE:
            raise _PermError(f"redirect to {target}, which has no SPF record (RFC 7208 6.1)")
        return result, reason
    return SpfResult.NEUTRAL, f"{domain}: no mechanism matched"


async def _fetch_record(context: _Context, domain: str) -> str | None:
    """RFC 7208 4.4 and 4.5: the one "v=spf1" TXT record, or None when there is none."""
    try:
        records = await context.resolver.txt(domain)
    except (DnsNxDomain, DnsNoData):
        return None
    except DnsError as exc:
        raise _TempError(f"DNS failure fetching SPF record of {domain}: {exc}") from None
    found = []
    for record in records:
        text = record.joined.decode("ascii", errors="replace")
        if text.lower() == "v=spf1" or text[:7].lower() == "v=spf1 ":
            found.append(text)
    if len(found) > 1:
        raise _PermError(f"{domain} publishes {len(found)} SPF records (RFC 7208 4.5)")
    return found[0] if found else None


# Parsing (RFC 7208 4.6, 5, 6, 12) --------------------------------------------------------------

def _parse(text: str) -> _Record:
    if len(text) > MAX_RECORD_LENGTH:
        raise _PermError("SPF record too long to evaluate")
    if not text.isascii() or any(not (0x20 <= ord(c) < 0x7f) for c in text):
        raise _PermError("SPF record has characters outside printable ASCII (RFC 7208 3.1)")
    terms: list[_Term] = []
    redirect: str | None = None
    seen_exp = False
    for word in text.split(" ")[1:]:
        if not word:
            continue
        modifier = _MODIFIER.match(word)
        if modifier is not None and modifier.group(1).lower() not in _MECHANISMS:
            name, value = modifier.group(1).lower(), modifier.group(2)
            _check_macro_string(value)
            if name == "redirect":
                if redirect is not None:
                    raise _PermError("redirect= given twice (RFC 7208 6)")
                _check_domain_spec(value)
                redirect = value
            elif name == "exp":
                if seen_exp:
                    raise _PermError("exp= given twice (RFC 7208 6)")
                _check_domain_spec(value)
                seen_exp = True
            continue  # unknown modifiers are ignored (6)
        terms.append(_parse_directive(word))
    if any(term.name == "all" for term in terms):
        redirect = None  # RFC 7208 6.1: redirect is ignored when there is an "all"
    return _Record(tuple(terms), redirect)


def _parse_directive(word: str) -> _Term:
    qualifier = SpfResult.PASS
    if word[0] in _QUALIFIERS:
        qualifier, word = _QUALIFIERS[word[0]], word[1:]
    name, sep, rest = word.partition(":")
    if not sep:
        slash = word.find("/")
        name, rest = (word, "") if slash < 0 else (word[:slash], word[slash:])
        rest_is_cidr_only = True
    else:
        rest_is_cidr_only = False
    name = name.lower()
    if name not in _MECHANISMS:
        raise _PermError(f"unknown mechanism {name!r} (RFC 7208 5)")
    if name == "all":
        if rest or sep:
            raise _PermError("all takes no argument")
        return _Term(qualifier, name, "", 32, 128)
    if name in ("ip4", "ip6"):
        if not sep:
            raise _PermError(f"{name} needs an address")
        return _Term(qualifier, name, "", 32, 128, _network(name, rest))
    if name in ("include", "exists"):
        if not sep or not rest:
            raise _PermError(f"{name} needs a domain-spec")
        _check_macro_string(rest)
        _check_domain_spec(rest)
        return _Term(qualifier, name, rest, 32, 128)
    if name == "ptr":
        if sep:
            if not rest:
                raise _PermError("ptr: empty domain-spec")
            _check_macro_string(rest)
            _check_domain_spec(rest)
        elif rest:
            raise _PermError("ptr takes no CIDR length")
        return _Term(qualifier, name, rest, 32, 128)
    # a and mx: [":" domain-spec] [ dual-cidr-length ]
    cidr = _CIDR.match(rest)
    assert cidr is not None  # the pattern matches every string
    spec, c4, c6 = cidr.group(1), cidr.group(2), cidr.group(3)
    if rest_is_cidr_only and spec:
        raise _PermError(f"bad {name} CIDR length {rest!r}")
    if sep:
        if not spec:
            raise _PermError(f"{name}: empty domain-spec")
        _check_macro_string(spec)
        _check_domain_spec(spec)
    cidr4 = int(c4) if c4 is not None else 32
    cidr6 = int(c6) if c6 is not None else 128
    if cidr4 > 32 or cidr6 > 128:
        raise _PermError(f"{name}: CIDR length out of range")
    return _Term(qualifier, name, spec, cidr4, cidr6)


def _network(name: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, slash, length = text.partition("/")
    if slash and not re.fullmatch(r"0|[1-9][0-9]{0,2}", length):
        raise _PermError(f"{name}: bad CIDR length {length!r}")
    try:
        if name == "ip4":
            if not re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", address):
                raise ValueError(address)
            return ipaddress.IPv4Network(f"{address}/{length or 32}", strict=False)
        return ipaddress.IPv6Network(f"{address}/{length or 128}", strict=False)
    except ValueError:
        raise _PermError(f"{name}: bad network {text!r}") from None


def _check_macro_string(text: str) -> None:
    if _MACRO_STRING.fullmatch(text) is None:
        raise _PermError(f"bad macro-string {text!r} (RFC 7208 7.1)")


def _check_domain_spec(text: str) -> None:
    """RFC 7208 7.1 domain-end: the spec ends in a macro or in "." toplabel ["."]."""
    if text.endswith("}"):
        return
    labels = text.rstrip(".").rsplit(".", 1)
    if len(labels) < 2 or _TOPLABEL.match(labels[1]) is None:
        raise _PermError(f"bad domain-spec {text!r} (RFC 7208 7.1)")


# Evaluation (RFC 7208 5) -----------------------------------------------------------------------

async def _matches(context: _Context, term: _Term, domain: str) -> bool:
    name = term.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        return term.network is not None and context.ip.version == term.network.version \
            and context.ip in term.network
    context.budget.charge_term()
    target = await _expand(term.domain_spec, context, domain) if term.domain_spec else domain
    if name == "include":
        result, _reason = await _check_host(context, target)
        if result is SpfResult.PASS:
            return True
        if result is SpfResult.TEMPERROR:
            raise _TempError(f"include:{target} gave temperror")
        if result in (SpfResult.PERMERROR, SpfResult.NONE):
            raise _PermError(f"include:{target} gave {result} (RFC 7208 5.2)")
        return False
    if name == "a":
        return _in_any(context, await _addresses(context, target, void_counts=True), term)
    if name == "mx":
        return await _match_mx(context, target, term)
    if name == "ptr":
        return any(_is_within(host, target) for host in await _validated_names(context))
    # exists: an A look-up whatever the client's IP version (5.7)
    try:
        await context.resolver.a(target)
    except (DnsNxDomain, DnsNoData):
        context.budget.charge_void()
        return False
    except DnsError as exc:
        raise _TempError(f"exists:{target}: {exc}") from None
    return True


async def _addresses(context: _Context, host: str, *, void_counts: bool) -> tuple[str, ...]:
    """A or AAAA records of `host`, by the client's IP version (5.3)."""
    try:
        if context.ip.version == 4:
            return await context.resolver.a(host)
        return await context.resolver.aaaa(host)
    except (DnsNxDomain, DnsNoData):
        if void_counts:
            context.budget.charge_void()
        return ()
    except DnsError as exc:
        raise _TempError(f"address look-up of {host}: {exc}") from None


def _in_any(context: _Context, addresses: tuple[str, ...], term: _Term) -> bool:
    prefix = term.cidr4 if context.ip.version == 4 else term.cidr6
    for text in addresses:
        try:
            network = ipaddress.ip_network(f"{text}/{prefix}", strict=False)
        except ValueError:
            continue
        if network.version == context.ip.version and context.ip in network:
            return True
    return False


async def _match_mx(context: _Context, target: str, term: _Term) -> bool:
    try:
        records = await context.resolver.mx(target)
    except (DnsNxDomain, DnsNoData):
        context.budget.charge_void()
        return False
    except DnsError as exc:
        raise _TempError(f"mx look-up of {target}: {exc}") from None
    hosts = [r.exchange for r in sorted(records) if not r.is_null]
    if len(hosts) > MAX_MX_NAMES:
        raise _PermError(f"mx:{target} has more than {MAX_MX_NAMES} names (RFC 7208 4.6.4)")
    for host in hosts:
        if _in_any(context, await _addresses(context, host, void_counts=False), term):
            return True
    return False


async def _validated_names(context: _Context) -> list[str]:
    """RFC 7208 5.5: PTR names of the client whose forward look-up gives the client back
    (the first 10 names only, 4.6.4). A DNS error on the PTR look-up means no names."""
    try:
        names = await context.resolver.ptr(str(context.ip))
    except (DnsNxDomain, DnsNoData):
        context.budget.charge_void()
        return []
    except DnsError:
        return []
    validated = []
    for name in names[:MAX_PTR_NAMES]:
        try:
            addresses = await _addresses(context, name, void_counts=False)
        except _TempError:
            continue  # 5.5: a failed forward look-up only drops that name
        if any(_same_ip(text, context.ip) for text in addresses):
            validated.append(name.lower())
    return validated


def _same_ip(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def _is_within(host: str, domain: str) -> bool:
    host, domain = host.lower().rstrip("."), domain.lower().rstrip(".")
    return host == domain or host.endswith("." + domain)


# Macros (RFC 7208 7) ---------------------------------------------------------------------------

async def _expand(spec: str, context: _Context, domain: str) -> str:
    """A domain-spec with its macros expanded and cut to 253 octets (7.3)."""
    if "%{p" in spec.lower() and context.validated_name is None:
        context.validated_name = await _validated_name(context, domain)
    out: list[str] = []
    pos = 0
    for match in _MACRO.finditer(spec):
        out.append(spec[pos:match.start()])
        pos = match.end()
        piece = match.group(0)
        if piece == "%%":
            out.append("%")
        elif piece == "%_":
            out.append(" ")
        elif piece == "%-":
            out.append("%20")
        else:
            out.append(_expand_one(match, context, domain))
    out.append(spec[pos:])
    expanded = "".join(out)
    while len(expanded) > MAX_DOMAIN_LENGTH and "." in expanded:
        expanded = expanded.split(".", 1)[1]
    return expanded.rstrip(".")


def _expand_one(match: re.Match[str], context: _Context, domain: str) -> str:
    letter, digits, reverse, delimiters = match.groups()
    lower = letter.lower()
    local, _, sender_domain = context.sender.rpartition("@")
    values = {
        "s": context.sender,
        "l": local or "postmaster",
        "o": sender_domain,
        "d": domain,
        "i": _macro_ip(context.ip),
        "p": context.validated_name or "unknown",
        "v": "in-addr" if context.ip.version == 4 else "ip6",
        "h": context.helo,
    }
    if lower not in values:
        raise _PermError(f"macro %{{{letter}}} is only allowed in exp= (RFC 7208 7.2)")
    value = values[lower]
    parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        keep = int(digits)
        if keep == 0:
            raise _PermError("macro transformer 0 (RFC 7208 7.3)")
        parts = parts[-keep:]
    result = ".".join(parts)
    if letter.isupper():
        result = urllib.parse.quote(result, safe="")  # 7.3: upper-case letters URL-escape
    return result


async def _validated_name(context: _Context, domain: str) -> str:
    """RFC 7208 7.3 %{p}: a validated PTR name of the client, preferring the domain itself, then
    one of its subdomains; "unknown" when there is none. Its look-ups count as a DNS term."""
    context.budget.charge_term()
    names = await _validated_names(context)
    for name in names:
        if name == domain:
            return name
    for name in names:
        if _is_within(name, domain):
            return name
    return names[0] if names else "unknown"


def _macro_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """RFC 7208 7.3: %{i} is dotted quad for IPv4 and dot-separated nibbles for IPv6."""
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


__all__ = ["MAX_DNS_TERMS", "MAX_VOID_LOOKUPS", "SpfResult", "SpfVerdict", "check_host", "check_spf"]
