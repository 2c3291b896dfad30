"""Events and answers of the SMTP server core (`mailprime.proto.smtp.server`).

Events that ask the application for a decision must be answered with `ServerConnection.send`
before the next `next_event()`; the others only report. Re-exported by `server`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from mailprime.proto.smtp.framing import AbortReason
from mailprime.proto.smtp.types import MailParams, RcptParams, Reply


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


class GoAhead(enum.Enum):
    GO_AHEAD = "GO_AHEAD"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by `next_event()` when more bytes must be received first."""
GO_AHEAD: Final = GoAhead.GO_AHEAD
"""The application's "proceed" answer to `DataStart`: 354 for DATA, nothing on the wire for BDAT."""


# Events --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EarlyTalker:
    """Bytes arrived before the greeting was sent. Answer 554/421 to refuse, or 220 to go on."""


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO or EHLO. Answer 250 (the core appends the EHLO extension lines itself) or refuse."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class StartTls:
    """Answer 220 and then start TLS and call `tls_started()`; or refuse (454)."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """Decoded SASL credentials. Answer 235 or 535 (failures count to `max_auth_failures`)."""

    mechanism: str
    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Mail:
    sender: str  # "" is the null reverse-path
    params: MailParams


@dataclass(frozen=True, slots=True)
class Rcpt:
    recipient: str
    params: RcptParams


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA, or the first BDAT of a transaction, passed the core's checks: answer GO_AHEAD (or a
    354 Reply for DATA) to proceed, or a refusal. A refused BDAT chunk is still read and dropped."""

    chunking: bool


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Body octets as they arrive: un-dot-stuffed with CRLF line ends (DATA), or raw (BDAT)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """The whole body arrived. Answer 250 once it is durable, or refuse; the transaction ends."""


@dataclass(frozen=True, slots=True)
class DataAbort:
    """The body being streamed is refused or lost: drop it. The transaction is over; when the
    connection is still open the core answers at the end of the data."""

    reason: AbortReason


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET (already answered 250): forget the transaction."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (already answered 221): write what is pending, then close."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The core answered an error itself (for logs and metrics); `close` when it gave up."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed (EOF) or the connection is over; returned again on every call."""


Event = (
    EarlyTalker | Helo | StartTls | AuthRequest | Mail | Rcpt | DataStart | DataChunk | DataEnd
    | DataAbort | Rset | Quit | ProtocolViolation | ConnectionClosed
)
Answer = Reply | GoAhead  # what `send` takes: a Reply, or GO_AHEAD
