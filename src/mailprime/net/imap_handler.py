"""What the IMAP server driver asks of the service behind it (declared here, satisfied by
`services.imap` without importing `net`).

The session answers each event of the protocol core with an async iterator of responses; the
driver writes them as they come and reads the session's decisions from them (see
`net.imap_server` for the rules: a Continuation accepts APPEND's literal, asks for a SASL
response, or starts IDLE; a tagged OK to STARTTLS starts the handshake) and from `state` and
`utf8`, which it copies into the core after each event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from mailprime.proto.imap.types import Event, Response, State, UntaggedStatus
from mailprime.proto.smtp.types import PeerInfo

__all__ = ["ImapHandler", "ImapSession", "LiteralSource", "PeerInfo"]


@runtime_checkable
class LiteralSource(Protocol):
    """What a `StreamedLiteral`'s `source` must be: the driver copies `size` octets from
    `chunks()` to the socket while the response is being written."""

    def chunks(self) -> AsyncIterator[bytes]: ...


class ImapSession(Protocol):
    @property
    def state(self) -> State:
        """The state the core must parse the next command in (RFC 9051 3); LOGOUT closes."""
        ...

    @property
    def utf8(self) -> bool:
        """UTF-8 mode was enabled (RFC 9051 6.3.1 / RFC 6855): the core encodes names so."""
        ...

    async def greeting(self) -> UntaggedStatus:
        """`* OK [CAPABILITY ...] ...` (or `* BYE` to refuse the connection)."""
        ...

    def respond(self, event: Event) -> AsyncIterator[Response]:
        """The responses to one event, in order; a command's tagged response comes last."""
        ...

    async def wait_for_change(self) -> None:
        """While IDLE: returns when there may be updates; the driver cancels it when the client
        speaks."""
        ...

    def idle_updates(self) -> AsyncIterator[Response]:
        """While IDLE, after `wait_for_change` returned: the untagged updates to write now."""
        ...

    async def on_tls(self) -> None:
        """The STARTTLS handshake succeeded."""
        ...

    async def on_close(self, received: int, sent: int) -> None:
        """The connection ended (octets read and written, for the session's log line)."""
        ...


class ImapHandler(Protocol):
    def new_session(self, peer: PeerInfo, tls: bool, *, starttls: bool, plaintext_login: bool,
                    literal_plus: bool) -> ImapSession:
        """`starttls`: STARTTLS is offered on this listener; `plaintext_login`: LOGIN and
        AUTHENTICATE PLAIN are allowed before TLS (a loopback listener so configured);
        `literal_plus`: the core takes RFC 7888 LITERAL+ (else LITERAL-)."""
        ...
