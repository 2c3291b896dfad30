"""Events of the POP3 server core (`mailprime.proto.pop3.server`).

`StartTls`, `Authenticate`, `Retrieve` and `Update` ask the application for a decision and must be
answered with `ServerConnection.send` before the next `next_event()`; the others only report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from mailprime.proto.pop3.types import Reply


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by `next_event()` when more bytes must be received first."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """STLS (RFC 2595 4). Answer +OK, start TLS, then call `tls_started()`; or a -ERR."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """USER/PASS (mechanism "USER") or a finished SASL exchange (RFC 5034). Answer
    `LoginAccepted` with the maildrop, or a -ERR (with code AUTH or none, it counts as a failure)."""

    mechanism: str
    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (`lines` None) or TOP of message `number` (1-based, of the login snapshot), not
    deleted. Answer CONTENT_FOLLOWS and stream the message (`send_content`, `end_content`), or
    a -ERR (the message vanished)."""

    number: int
    lines: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in the TRANSACTION state (RFC 1939 6): remove the messages `deleted` (numbers,
    ascending) and answer +OK, or -ERR if some could not be removed. The connection then ends."""

    deleted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT before login (already answered +OK): nothing to update; the connection ends."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The core answered an error itself (for logs); `close` when it gave up on the client."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed (EOF) or the connection is over; returned again on every call. A
    connection that ends this way never reaches UPDATE: nothing is deleted (RFC 1939 6)."""


Event = StartTls | Authenticate | Retrieve | Update | Quit | ProtocolViolation | ConnectionClosed
