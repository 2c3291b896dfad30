"""What the POP3 server driver asks of the service behind it (declared here, satisfied by
`services.pop3` without importing `net`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mailprime.proto.pop3.types import ContentSink, LoginAccepted, Reply
from mailprime.proto.smtp.types import PeerInfo

__all__ = ["ContentSink", "PeerInfo", "Pop3Handler", "Pop3Session"]


class Pop3Session(Protocol):
    """One per connection. The driver calls these in protocol order. A `DomainError` raised by
    any of them is answered "-ERR [SYS/TEMP]" (or, in the middle of a message, ends the
    connection)."""

    async def on_connect(self) -> Reply | None:
        """None greets normally; a -ERR Reply refuses the connection."""
        ...

    async def on_tls(self) -> None:
        """TLS was established after STLS; the driver has already reset the protocol state."""
        ...

    async def on_login(self, mechanism: str, authzid: str, authcid: str,
                       password: str) -> LoginAccepted | Reply:
        """USER/PASS ("USER") or SASL credentials: the maildrop snapshot numbered 1..n for the
        session, or a -ERR ([AUTH] counts as a failed attempt; [SYS/TEMP] does not)."""
        ...

    async def on_retrieve(self, number: int, lines: int | None, sink: ContentSink) -> Reply | None:
        """Streams message `number` (RETR; TOP when `lines` is given) into `sink` and returns
        None; or returns a -ERR before writing anything (the message vanished meanwhile)."""
        ...

    def on_idle(self) -> None:
        """The connection is about to wait for the client's next command: a moment for work
        that would otherwise delay the next answer (no I/O; it must not fail)."""
        ...

    async def on_update(self, deleted: Sequence[int]) -> Reply:
        """QUIT after login: remove the messages numbered `deleted` (RFC 1939 6 UPDATE)."""
        ...

    async def on_close(self) -> None: ...


class Pop3Handler(Protocol):
    def new_session(self, peer: PeerInfo, tls: bool) -> Pop3Session: ...
