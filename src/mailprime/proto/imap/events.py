"""Connection states and the events of the IMAP server core (`mailprime.proto.imap.server`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from mailprime.proto.imap.command_types import Command
from mailprime.proto.imap.response_types import ResponseCode, ResponseStatus, Tagged, UntaggedStatus


class State(enum.Enum):
    """RFC 3501 3 / RFC 9051 3: the session decides transitions and tells the core (`set_state`)."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by `next_event()` when more bytes must be received first."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A complete, valid command for the current state. For `Append` it arrives when the
    message literal is announced (see `Append`)."""

    tag: str
    command: Command


@dataclass(frozen=True, slots=True)
class LiteralRequest:
    """A command (other than APPEND) announced a literal: answer `accept_literal()` (which
    returns the "+" continuation for a synchronizing one) or `reject_literal(response)`."""

    tag: str
    command_name: str
    size: int
    synchronizing: bool


@dataclass(frozen=True, slots=True)
class AppendData:
    """Octets of an accepted APPEND message literal, in order, in bounded chunks."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AppendEnd:
    """The APPEND command line is complete: store the message, then answer the tag."""

    tag: str


@dataclass(frozen=True, slots=True)
class AuthenticateData:
    """A client line during AUTHENTICATE, base64-decoded; None when the client cancelled ("*")."""

    data: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The client ended IDLE with "DONE": answer `tag OK`."""

    tag: str


@dataclass(frozen=True, slots=True)
class BadCommand:
    """The core refused a command line (syntax, unknown command, wrong state, bad charset,
    literal too big...). Answer with `response()`: a tagged BAD (or NO, e.g. [BADCHARSET]),
    or an untagged BAD when no tag could be read."""

    tag: str | None
    text: str
    code: ResponseCode | None = None
    status: ResponseStatus = ResponseStatus.BAD

    def response(self) -> Tagged | UntaggedStatus:
        if self.tag is None:
            return UntaggedStatus(ResponseStatus.BAD, self.text, self.code)
        return Tagged(self.tag, self.status, self.text, self.code)


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Fatal: send "* BYE text" and close. The core reads nothing more."""

    text: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed (EOF) or the session went to LOGOUT; returned again on every call."""


Event = (
    CommandReceived | LiteralRequest | AppendData | AppendEnd | AuthenticateData | IdleDone
    | BadCommand | ProtocolViolation | ConnectionClosed
)
