"""MX routing: which hosts and addresses to try, in which order, for one destination domain.

Theory of operation (RFC 5321 5.1, RFC 7505). `Router.route(domain)`:

1. An address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]") is its own single route.
2. Ask for MX records.
   * NXDOMAIN: the domain does not exist: permanent failure 5.1.2.
   * NODATA (no MX): the domain itself is the implicit MX, preference 0 (RFC 5321 5.1).
   * Temporary failure: transient failure 4.4.3; the queue retries later.
   * Only null MX records (exchange ".", RFC 7505 3): the domain accepts no mail: permanent
     failure 5.1.10 (RFC 7505 4.2 code 556). A null MX beside real ones is ignored (RFC 7505 3
     forbids the mix; we use what can work).
3. Order the hosts by preference, shuffling hosts of equal preference (RFC 5321 5.1 "SHOULD be
   randomised" spreads load), drop duplicates, keep the first `max_mx_hosts`.
4. Resolve every kept host's A and AAAA records concurrently (the resolver follows CNAMEs).
   Order each host's addresses by the IP preference, keep `max_addresses_per_host`, skip an
   address already listed for a better host, stop at `max_routes` (RFC 5321 5.1: a client MAY
   cap the addresses tried but SHOULD try at least two).
5. Any route found is the answer — a host that failed to resolve is simply skipped. With none:
   a temporary failure on any host is transient (4.4.3); otherwise the failure is permanent:
   5.1.2 for an implicit MX without addresses, 5.4.4 "unable to route" when no MX host of the
   domain has an address (as Postfix does).

The router depends on the `Resolver` protocol only; `net.dns.DnsResolver` is plugged in by the
composition root.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import random
from dataclasses import dataclass

from mailprime.delivery.transport import TlsRequirement
from mailprime.domain.errors import DomainError
from mailprime.message.resolver import DnsError, DnsNoData, DnsNxDomain, MxRecord, Resolver

# RFC 5321 5.1 lets the client cap what it tries; these are the defaults.
MAX_MX_HOSTS = 10
MAX_ADDRESSES_PER_HOST = 4
MAX_ROUTES = 10


class IpPreference(enum.StrEnum):
    """Which address family to try first, or only. IPv4 first is the default because mailbox
    providers demand more of IPv6 senders (PTR, authentication) and many senders have no IPv6."""

    IPV4_FIRST = "ipv4-first"
    IPV6_FIRST = "ipv6-first"
    IPV4_ONLY = "ipv4-only"
    IPV6_ONLY = "ipv6-only"


@dataclass(frozen=True, slots=True)
class Route:
    """One address to try. `implicit` is True when the domain had no MX (RFC 5321 5.1). `tls`
    is the TLS the route demands (set by delivery.mta_sts.MtaStsRouter; None: the dialer's own
    opportunistic policy); the transport hands it to `Dialer.connect`."""

    mx_host: str
    ip: str
    preference: int
    implicit: bool = False
    tls: TlsRequirement | None = None

    @property
    def host(self) -> str:
        """Same as `mx_host`: the name to use for TLS SNI and certificate checks."""
        return self.mx_host


@dataclass(frozen=True, slots=True)
class RoutingLimits:
    max_mx_hosts: int = MAX_MX_HOSTS
    max_addresses_per_host: int = MAX_ADDRESSES_PER_HOST
    max_routes: int = MAX_ROUTES


class RoutingError(DomainError):
    """No route to a domain. `transient` says whether a later attempt may succeed; `reason` is
    one line for logs, events and the DSN; smtp_code/smtp_enhanced are the reply to report."""

    def __init__(self, domain: str, reason: str, *, transient: bool, enhanced: str,
                 code: int | None = None) -> None:
        super().__init__(reason)
        self.domain = domain
        self.reason = reason
        self.transient = transient
        self.smtp_enhanced = enhanced
        self.enhanced = enhanced
        self.smtp_code = code if code is not None else (451 if transient else 550)

    @property
    def permanent(self) -> bool:
        return not self.transient

    def one_line(self) -> str:
        """"556 5.1.10 domain x does not accept mail (null MX, RFC 7505)": the text a DSN's
        Diagnostic-Code and the event log carry."""
        return f"{self.smtp_code} {self.smtp_enhanced} {self.reason}"


@dataclass(frozen=True, slots=True)
class _HostAddresses:
    host: str
    preference: int
    ips: tuple[str, ...]
    temporary_failure: bool


class Router:
    def __init__(self, resolver: Resolver, *, limits: RoutingLimits | None = None,
                 ip_preference: IpPreference = IpPreference.IPV4_FIRST,
                 rng: random.Random | None = None) -> None:
        self._resolver = resolver
        self._limits = limits or RoutingLimits()
        self._pref = ip_preference
        # Not for security: only spreads load across equal-preference MX hosts.
        self._rng = rng or random.Random()

    async def route(self, domain: str) -> tuple[Route, ...]:
        """The ordered routes for `domain`, never empty; raises RoutingError."""
        name = domain.strip().rstrip(".").lower()
        if name.startswith("[") and name.endswith("]"):
            return (self._literal(name),)
        try:
            mxs: tuple[MxRecord, ...] | None = await self._resolver.mx(name)
        except DnsNxDomain:
            raise RoutingError(name, f"domain {name} does not exist (NXDOMAIN)",
                               transient=False, enhanced="5.1.2") from None
        except DnsNoData:
            mxs = None
        except DnsError as exc:
            raise RoutingError(name, f"temporary DNS failure looking up MX of {name}: {exc.message}",
                               transient=True, enhanced="4.4.3") from None

        implicit = mxs is None
        if mxs is None:
            hosts = [(0, name)]
        else:
            real = [mx for mx in mxs if not mx.is_null]
            if not real:
                raise RoutingError(name, f"domain {name} does not accept mail (null MX, RFC 7505)",
                                   transient=False, enhanced="5.1.10", code=556)
            hosts = self._order(real)
        hosts = hosts[: self._limits.max_mx_hosts]

        resolved = await asyncio.gather(*(self._addresses(pref, host) for pref, host in hosts))
        routes: list[Route] = []
        seen: set[str] = set()
        for entry in resolved:
            for ip in entry.ips[: self._limits.max_addresses_per_host]:
                if ip in seen or len(routes) >= self._limits.max_routes:
                    continue
                seen.add(ip)
                routes.append(Route(entry.host, ip, entry.preference, implicit))
        if routes:
            return tuple(routes)
        if any(entry.temporary_failure for entry in resolved):
            raise RoutingError(name, f"temporary DNS failure resolving the mail hosts of {name}",
                               transient=True, enhanced="4.4.3")
        if implicit:
            raise RoutingError(name, f"domain {name} has no MX and no address records",
                               transient=False, enhanced="5.1.2")
        listed = ", ".join(host for _, host in hosts)
        raise RoutingError(name, f"no mail host of {name} has an address ({listed})",
                           transient=False, enhanced="5.4.4")

    def _order(self, mxs: list[MxRecord]) -> list[tuple[int, str]]:
        """By preference, equal preferences shuffled, each host once (at its best preference)."""
        by_pref: dict[int, list[str]] = {}
        for mx in mxs:
            by_pref.setdefault(mx.preference, []).append(mx.exchange)
        ordered: list[tuple[int, str]] = []
        seen: set[str] = set()
        for pref in sorted(by_pref):
            group = list(dict.fromkeys(by_pref[pref]))
            self._rng.shuffle(group)
            for host in group:
                if host not in seen:
                    seen.add(host)
                    ordered.append((pref, host))
        return ordered

    async def _addresses(self, preference: int, host: str) -> _HostAddresses:
        families: list[str] = {
            IpPreference.IPV4_FIRST: ["a", "aaaa"],
            IpPreference.IPV6_FIRST: ["aaaa", "a"],
            IpPreference.IPV4_ONLY: ["a"],
            IpPreference.IPV6_ONLY: ["aaaa"],
        }[self._pref]
        results = await asyncio.gather(*(self._lookup(family, host) for family in families))
        ips: list[str] = []
        temporary = False
        for found, failed in results:
            temporary = temporary or failed
            ips.extend(ip for ip in found if ip not in ips and _usable(ip))
        return _HostAddresses(host, preference, tuple(ips), temporary)

    async def _lookup(self, family: str, host: str) -> tuple[tuple[str, ...], bool]:
        """(addresses, temporary failure?) — a missing record is not a failure here."""
        try:
            if family == "a":
                return await self._resolver.a(host), False
            return await self._resolver.aaaa(host), False
        except (DnsNxDomain, DnsNoData):
            return (), False
        except DnsError:
            return (), True

    def _literal(self, literal: str) -> Route:
        inner = literal[1:-1]
        if inner.lower().startswith("ipv6:"):
            inner = inner[5:]
        try:
            ip = ipaddress.ip_address(inner)
        except ValueError:
            raise RoutingError(literal, f"invalid address literal {literal}",
                               transient=False, enhanced="5.1.2") from None
        if not _usable(str(ip)):
            raise RoutingError(literal, f"address literal {literal} is not routable",
                               transient=False, enhanced="5.1.2")
        return Route(literal, str(ip), 0, implicit=True)


def _usable(ip: str) -> bool:
    """0.0.0.0, :: and multicast are never a mail host, whatever DNS says."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_multicast)


__all__ = [
    "MAX_ADDRESSES_PER_HOST",
    "MAX_MX_HOSTS",
    "MAX_ROUTES",
    "IpPreference",
    "Route",
    "Router",
    "RoutingError",
    "RoutingLimits",
]
