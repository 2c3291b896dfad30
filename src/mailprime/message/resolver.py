"""The DNS port: what mail handling may ask of DNS, and how a look-up can fail.

`message/` and `delivery/` depend on this Protocol only; `net.dns.DnsResolver` implements it with
dnspython, and tests run it against a real DNS server on loopback. Results are typed values; a
look-up that yields no usable records raises one of the `DnsError` subclasses below, so callers can
tell "this name does not exist" (permanent) from "this name has no records of that type" (often
meaningful, e.g. no MX means implicit MX) from "try again later" (transient).

Names are given and returned as lower-case A-labels without the trailing root dot. CNAME chains
are followed by the implementation: a caller never sees a CNAME.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailprime.domain.errors import DomainError


class DnsError(DomainError):
    """Base of every DNS look-up failure. `name` and `rdtype` say which look-up failed."""

    # A DNS problem on our side of the conversation is "try again" unless a subclass says not.
    smtp_code = 451
    smtp_enhanced = "4.4.3"  # RFC 3463: directory server failure
    http_status = 503
    permanent = False

    def __init__(self, message: str, name: str = "", rdtype: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.rdtype = rdtype


class DnsNxDomain(DnsError):
    """The name does not exist (RCODE 3, RFC 1035 4.1.1) — no record of any type."""

    smtp_code = 550
    smtp_enhanced = "5.1.2"  # RFC 3463: bad destination system address
    http_status = 422
    permanent = True


class DnsNoData(DnsError):
    """The name exists but has no record of the asked type (RFC 2308 2.2 "NODATA")."""

    smtp_code = 550
    smtp_enhanced = "5.1.2"
    http_status = 422
    permanent = True


class DnsTemporaryFailure(DnsError):
    """SERVFAIL, REFUSED, timeout or no reachable nameserver: the answer is unknown for now."""


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    """One MX record (RFC 1035 3.3.9). `exchange` is "" for the root name, i.e. a null MX."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        """RFC 7505 3: a null MX has an empty (root) exchange."""
        return self.exchange == ""


@dataclass(frozen=True, slots=True)
class TxtRecord:
    """One TXT record: its character-strings as sent (RFC 1035 3.3.14), each at most 255 octets."""

    strings: tuple[bytes, ...]

    @property
    def joined(self) -> bytes:
        """The strings concatenated without separator, as SPF (RFC 7208 3.3) and DKIM
        (RFC 6376 3.6.2.2) read a record split over several strings."""
        return b"".join(self.strings)

    @property
    def text(self) -> str:
        """`joined` as text; undecodable bytes become U+FFFD so a broken record cannot raise."""
        return self.joined.decode("utf-8", errors="replace")


class Resolver(Protocol):
    """Asynchronous DNS look-ups. Each method returns a non-empty tuple or raises a DnsError:
    `DnsNxDomain`, `DnsNoData` or `DnsTemporaryFailure`."""

    async def mx(self, domain: str) -> tuple[MxRecord, ...]:
        """MX records in answer order (callers sort by preference)."""
        ...

    async def a(self, domain: str) -> tuple[str, ...]:
        """IPv4 addresses in dotted-quad form."""
        ...

    async def aaaa(self, domain: str) -> tuple[str, ...]:
        """IPv6 addresses in compressed form (RFC 5952)."""
        ...

    async def txt(self, name: str) -> tuple[TxtRecord, ...]: ...

    async def ptr(self, ip: str) -> tuple[str, ...]:
        """Host names for an IPv4 or IPv6 address (the in-addr.arpa / ip6.arpa look-up is done
        by the implementation)."""
        ...


__all__ = [
    "DnsError",
    "DnsNoData",
    "DnsNxDomain",
    "DnsTemporaryFailure",
    "MxRecord",
    "Resolver",
    "TxtRecord",
]
