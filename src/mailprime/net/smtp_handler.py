"""What the SMTP server driver asks of the service behind it (declared here, satisfied by
`services.inbound` without importing `net`)."""

from __future__ import annotations

from typing import Protocol

from mailprime.proto.smtp.types import AuthOutcome, MailParams, PeerInfo, RcptParams, Reply

__all__ = ["AuthOutcome", "PeerInfo", "SmtpHandler", "SmtpSession"]


class SmtpSession(Protocol):
    """One per connection. The driver calls these in protocol order; every decision is a Reply.

    Body chunks arrive already de-dot-stuffed with CRLF line ends; the session spools them.
    """

    async def on_connect(self) -> Reply | None:
        """None greets normally; a 554 Reply refuses the connection (RFC 5321 3.1)."""
        ...

    async def on_helo(self, name: str, extended: bool) -> Reply | None: ...
    async def on_tls(self) -> None:
        """TLS was established; the driver has already reset the protocol state (RFC 3207)."""
        ...

    async def on_auth(self, mechanism: str, authzid: str, authcid: str, password: str) -> AuthOutcome:
        ...

    async def on_mail(self, sender: str, params: MailParams) -> Reply: ...
    async def on_rcpt(self, recipient: str, params: RcptParams) -> Reply: ...
    async def on_data_start(self) -> Reply | None:
        """Before DATA's 354 (or the first BDAT chunk): None proceeds, a Reply refuses."""
        ...

    async def on_data_chunk(self, chunk: bytes) -> None: ...
    async def on_data_end(self) -> Reply:
        """The whole message arrived; return 250 only after it is durable."""
        ...

    async def on_data_abort(self, reason: str) -> None:
        """The message was refused mid-stream (too big, bare LF, connection lost): drop it."""
        ...

    async def on_reset(self) -> None: ...
    async def on_close(self) -> None: ...


class SmtpHandler(Protocol):
    def new_session(self, peer: PeerInfo, tls: bool) -> SmtpSession: ...
