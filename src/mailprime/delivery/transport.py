"""Ports of outbound delivery: how the worker hands a job to a transport, and how the SMTP
transport reaches a remote server. `net.smtp_client` satisfies `Dialer` through an adapter that the
composition root builds; delivery never imports `net`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailprime.domain.mail import DeliveryJob, DsnRet, RecipientOutcome
from mailprime.proto.smtp.types import Reply
from mailprime.storage.ports import BlobReader


class DeliveryError(Exception):
    """A delivery attempt failed as a whole (connect, TLS, timeout, protocol). `reply`: the
    server's reply that ended the session, when one did (a 421 greeting or a 421 mid-session),
    so that traffic shaping can see throttling."""

    def __init__(self, reason: str, *, transient: bool = True, enhanced: str = "4.4.1",
                 reply: Reply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.enhanced = enhanced
        self.reply = reply


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionReplies:
    """The remote replies of one mail transaction (RFC 5321 3.3)."""

    mail: Reply
    rcpts: tuple[Reply, ...]  # one per recipient, in order
    data: Reply | None  # None when no recipient was accepted (DATA not sent)
    # The server offered DSN (RFC 3461 5.2.1), so NOTIFY, ORCPT, RET and ENVID were passed on.
    dsn: bool = False


class OutboundConnection(Protocol):
    @property
    def tls_active(self) -> bool: ...
    @property
    def description(self) -> str:
        """E.g. "mx1.example.com[192.0.2.1]:25", for logs and events."""
        ...

    def is_usable(self) -> bool:
        """Still connected and in a state where another transaction may start."""
        ...

    async def transact(self, sender: str, recipients: Sequence[OutboundRecipient], content: BlobReader,
                       *, smtputf8: bool, ret: DsnRet | None, envid: str | None,
                       body_8bit: bool = False, require_tls: bool = False) -> TransactionReplies:
        """Streams `content` (its chunks, from the start). `body_8bit`: the content has octets
        above 127 (declared as BODY=8BITMIME where offered, RFC 6152). `require_tls`: the
        message carries REQUIRETLS (RFC 8689), sent on MAIL FROM; a session without TLS or a
        server that does not offer REQUIRETLS answers with the local refusal 550 5.7.30 as the
        MAIL reply, without a word on the wire. Raises DeliveryError when the connection fails
        before the transaction has replies."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """TLS that a route demands (MTA-STS "enforce", RFC 8461 4.2; REQUIRETLS, RFC 8689):
    STARTTLS must succeed, and with `verify` the certificate must chain to a trusted root and
    match the MX host name; otherwise the route is not used. None (no requirement) means the
    dialer's own policy: opportunistic TLS by default (RFC 7435). With `enforce` False (an
    MTA-STS policy in "testing" mode) a failure is only counted and the route used anyway, so
    such a connection proves nothing about its TLS and must not serve an enforced route."""

    verify: bool = True
    source: str = "mta-sts"  # what demanded it: for logs, DSNs and TLS reports
    enforce: bool = True


class Dialer(Protocol):
    async def connect(self, ip: str, port: int, *, server_name: str, source_ip: str | None = None,
                      tls: TlsRequirement | None = None) -> OutboundConnection:
        """Connects (from `source_ip` when given: IP pools), reads the greeting, EHLOs and
        upgrades with STARTTLS when offered (required, and verified, per `tls`).
        Raises DeliveryError (transient) on failure."""
        ...


class Transport(Protocol):
    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        """Attempts the job, streaming `content` (anew for each route it tries); returns one
        outcome per recipient of the job (status PENDING with no next_attempt_at means
        "transient failure": the worker schedules the retry)."""
        ...

    async def close(self) -> None: ...
