"""DnsResolver: the `message.resolver.Resolver` port implemented with dnspython's asyncio resolver.

Theory of operation. Every public look-up goes through `_query(name, rdtype)`:

1. The name is converted to an absolute DNS name (IDNA for U-labels); a name that cannot exist
   (empty label, label over 63 octets, name over 255 octets — RFC 1035 2.3.4) is NXDOMAIN at once.
2. The cache is consulted. Entries are positive (a tuple of rdata) or negative (NXDOMAIN or
   NODATA), each with an expiry from the DNS TTL: the answer's smallest TTL along the CNAME chain
   for positive answers, and min(SOA TTL, SOA MINIMUM) from the authority section for negative
   ones (RFC 2308 5). A negative answer without an SOA is not cached. TTLs are capped at
   `max_ttl`; a TTL of 0 is never cached. Temporary failures are never cached, so a retry asks
   the nameserver again. The cache is an LRU bounded at `cache_size` entries.
3. Concurrent look-ups of the same (name, type) share one query (a burst of deliveries to one
   domain asks DNS once): the first caller starts a task, the others await it through `shield`
   so that one cancelled caller does not cancel the others.
4. The query itself is dnspython's stub resolver (no search list, no /etc/resolv.conf when
   nameservers are given). dnspython follows a CNAME chain inside one response; when a response
   ends at a CNAME whose target it does not answer for, we query the target ourselves, at most
   MAX_CNAME_HOPS times. Truncated UDP answers are retried over TCP by dnspython.

dnspython's exceptions are translated at this boundary into the port's DnsError tree and never
escape.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.reversename
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from mailprime.domain.errors import ConfigError
from mailprime.message.resolver import (
    DnsError,
    DnsNoData,
    DnsNxDomain,
    DnsTemporaryFailure,
    MxRecord,
    TxtRecord,
)

# A single answer can carry thousands of records over TCP (64 KiB, RFC 1035 4.2.2); nothing we
# look up needs more than a few, so we keep the first MAX_RECORDS.
MAX_RECORDS = 256
# dnspython caps a chain inside one response at 16; across responses we allow this many hops.
MAX_CNAME_HOPS = 8
DEFAULT_CACHE_SIZE = 4096
DEFAULT_MAX_TTL = 3600

_Rdatas = tuple[dns.rdata.Rdata, ...]
_Key = tuple[str, int]


def parse_nameserver(spec: str) -> tuple[str, int]:
    """"192.0.2.1", "192.0.2.1:5353", "2001:db8::1" or "[2001:db8::1]:5353" -> (ip, port)."""
    text = spec.strip()
    host, port = text, 53
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"[dns] nameservers: cannot parse {spec!r}")
        host = inner
        if rest:
            port = _port(rest[1:], spec)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, spec)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"[dns] nameservers: {spec!r} is not an IP address") from None
    return str(ip), port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"[dns] nameservers: bad port in {spec!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    rdatas: _Rdatas = ()
    negative: type[DnsError] | None = None  # DnsNxDomain or DnsNoData


class DnsResolver:
    """Resolver port over dnspython. `nameservers` are "ip" or "ip:port" ("[v6]:port"); when
    empty, the system configuration (/etc/resolv.conf) is read. `timeout` bounds each look-up
    in seconds, all retries and servers included."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        timeout: float = 5.0,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_ttl: int = DEFAULT_MAX_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ConfigError("[dns] timeout: must be positive")
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                raise ConfigError(f"[dns] nameservers: none given and the system has none ({exc})") from exc
        resolver.lifetime = timeout
        # Per server try: a silent first server must leave time to ask the next one.
        resolver.timeout = timeout / max(1, len(resolver.nameservers))
        self._resolver = resolver
        self._cache: OrderedDict[_Key, _Entry] = OrderedDict()
        self._cache_size = cache_size
        self._max_ttl = max_ttl
        self._clock = clock
        self._inflight: dict[_Key, asyncio.Task[_Rdatas]] = {}

    # The port ----------------------------------------------------------------------------------

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        rdatas = await self._query(domain, dns.rdatatype.MX)
        return tuple(
            MxRecord(rd.preference, _host(rd.exchange)) for rd in cast(tuple[MX, ...], rdatas)
        )

    async def a(self, domain: str) -> tuple[str, ...]:
        rdatas = await self._query(domain, dns.rdatatype.A)
        return tuple(str(rd.address) for rd in cast(tuple[A, ...], rdatas))

    async def aaaa(self, domain: str) -> tuple[str, ...]:
        rdatas = await self._query(domain, dns.rdatatype.AAAA)
        return tuple(str(ipaddress.IPv6Address(rd.address)) for rd in cast(tuple[AAAA, ...], rdatas))

    async def txt(self, name: str) -> tuple[TxtRecord, ...]:
        rdatas = await self._query(name, dns.rdatatype.TXT)
        return tuple(TxtRecord(tuple(rd.strings)) for rd in cast(tuple[TXT, ...], rdatas))

    async def ptr(self, ip: str) -> tuple[str, ...]:
        try:
            reverse = dns.reversename.from_address(ip)
        except (ValueError, dns.exception.SyntaxError):
            raise DnsNxDomain(f"not an IP address: {ip!r}", ip, "PTR") from None
        rdatas = await self._query(reverse.to_text(omit_final_dot=True), dns.rdatatype.PTR)
        return tuple(_host(rd.target) for rd in cast(tuple[PTR, ...], rdatas))

    def clear_cache(self) -> None:
        self._cache.clear()

    # Cache and query sharing -------------------------------------------------------------------

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Rdatas:
        qname = _to_name(name, rdtype)
        key = (qname.to_text(omit_final_dot=True).lower(), int(rdtype))
        entry = self._cache_get(key)
        if entry is not None:
            if entry.negative is not None:
                raise _negative_error(entry.negative, key[0], rdtype)
            return entry.rdatas
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._resolve(qname, key, rdtype))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task)

    def _finished(self, key: _Key, task: asyncio.Task[_Rdatas]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Mark the exception retrieved: if every waiter was cancelled nobody else will.
        if not task.cancelled():
            task.exception()

    def _cache_get(self, key: _Key) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry

    def _cache_put(self, key: _Key, ttl: int | None, rdatas: _Rdatas = (),
                   negative: type[DnsError] | None = None) -> None:
        if ttl is None or ttl <= 0 or self._cache_size <= 0:
            return
        expires = self._clock() + min(ttl, self._max_ttl)
        self._cache[key] = _Entry(expires, rdatas, negative)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # The query ---------------------------------------------------------------------------------

    async def _resolve(self, qname: dns.name.Name, key: _Key, rdtype: dns.rdatatype.RdataType) -> _Rdatas:
        current = qname
        min_ttl: int | None = None
        for _hop in range(MAX_CNAME_HOPS):
            try:
                answer = await self._resolver.resolve(
                    current, rdtype, raise_on_no_answer=False, search=False
                )
            except dns.resolver.NXDOMAIN as exc:
                self._cache_put(key, _negative_ttl(_nx_response(exc, current), min_ttl),
                                negative=DnsNxDomain)
                raise _negative_error(DnsNxDomain, key[0], rdtype) from None
            except dns.exception.Timeout:
                raise DnsTemporaryFailure(
                    f"DNS timeout looking up {key[0]} {rdtype.name}", key[0], rdtype.name
                ) from None
            except dns.resolver.NoNameservers:
                # Every nameserver answered SERVFAIL or REFUSED, or could not be reached.
                raise DnsTemporaryFailure(
                    f"DNS server failure looking up {key[0]} {rdtype.name}", key[0], rdtype.name
                ) from None
            except (dns.exception.DNSException, OSError) as exc:
                raise DnsTemporaryFailure(
                    f"DNS error looking up {key[0]} {rdtype.name}: {exc}", key[0], rdtype.name
                ) from None
            chain_ttl = answer.chaining_result.minimum_ttl
            if answer.rrset is not None:
                rdatas = tuple(answer.rrset)[:MAX_RECORDS]
                self._cache_put(key, _min(min_ttl, chain_ttl), rdatas)
                return rdatas
            if answer.canonical_name != current:
                # The response stopped at a CNAME whose target it did not answer for.
                min_ttl = _min(min_ttl, chain_ttl)
                current = answer.canonical_name
                continue
            self._cache_put(key, _negative_ttl(answer.response, min_ttl), negative=DnsNoData)
            raise _negative_error(DnsNoData, key[0], rdtype)
        raise DnsTemporaryFailure(
            f"CNAME chain longer than {MAX_CNAME_HOPS} looking up {key[0]}", key[0], rdtype.name
        )


def _to_name(text: str, rdtype: dns.rdatatype.RdataType) -> dns.name.Name:
    stripped = text.strip().rstrip(".")
    try:
        if not stripped:
            raise dns.name.EmptyLabel
        if stripped.isascii():
            return dns.name.from_text(stripped)
        return dns.name.from_unicode(stripped)
    except (dns.exception.DNSException, UnicodeError):
        raise DnsNxDomain(f"invalid domain name {text!r}", text, rdtype.name) from None


def _host(name: dns.name.Name) -> str:
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _negative_error(kind: type[DnsError], name: str, rdtype: dns.rdatatype.RdataType) -> DnsError:
    if kind is DnsNxDomain:
        return DnsNxDomain(f"{name} does not exist (NXDOMAIN)", name, rdtype.name)
    return DnsNoData(f"{name} has no {rdtype.name} record", name, rdtype.name)


def _nx_response(exc: dns.resolver.NXDOMAIN, qname: dns.name.Name) -> dns.message.Message | None:
    # NXDOMAIN keeps the responses by query name; `exc.response()` is untyped, so read them here.
    responses = exc.kwargs.get("responses") or {}
    response = responses.get(qname)
    return response if isinstance(response, dns.message.Message) else None


def _negative_ttl(response: dns.message.Message | None, chain_ttl: int | None) -> int | None:
    """RFC 2308 5: a negative answer lives for min(SOA TTL, SOA MINIMUM) — and no longer than
    the CNAMEs that led to it; without an SOA it is not cached at all."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            soa = cast(SOA, rrset[0])
            return _min(chain_ttl, min(int(rrset.ttl), int(soa.minimum)))
    return None


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


__all__ = ["DnsResolver", "parse_nameserver"]
