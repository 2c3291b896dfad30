"""The IMAP server protocol core, sans-IO (IMAP4rev1 RFC 3501, IMAP4rev2 RFC 9051, LITERAL+/-
RFC 7888, BINARY RFC 3516, SASL-IR RFC 4959, IDLE RFC 2177, UTF8=ACCEPT RFC 6855).

Theory of operation
-------------------
`ServerConnection` turns received bytes into events and responses into bytes, h11-style:
`receive_data(bytes)` (b"" is EOF), then `next_event()` until it returns `NEED_DATA`, and
`send(response)` for each response, which returns wire segments (bytes and `StreamedLiteral`s
the driver streams itself). The core never writes on its own and never parses ahead: each
command is parsed when `next_event()` reaches it, against the state the session last set with
`set_state()` (the session decides LOGIN, SELECT, CLOSE... transitions, RFC 3501 3).

A command is one line, or several lines joined by literals: each line but the last ends with
"{n}" (synchronizing: the client waits for "+"), "{n+}" (non-synchronizing, RFC 7888) or "~{n}"
(literal8, APPEND only, RFC 3516). At each announcement the command read so far is parsed:
  * a syntax error, unknown command or wrong state -> `BadCommand` at once;
  * APPEND's message literal -> `CommandReceived(tag, Append(...size...))`;
  * any other literal -> `LiteralRequest(tag, name, size, synchronizing)`.
Those two wait for the session: `accept_literal()` (returns the "+" continuation for a
synchronizing literal, b"" otherwise) or `reject_literal(tagged)` (returns the answer's bytes).
`next_event()` raises `LocalProtocolError` until one is called. An accepted command literal is
buffered (at most `Limits.max_literal` octets per command) and the command goes on; APPEND's
message streams out as `AppendData` chunks, then the rest of its line (which must be empty:
no MULTIAPPEND) gives `AppendEnd(tag)`. A refused synchronizing literal ends the command (the
client got no "+", RFC 3501 7.5); a refused non-synchronizing one was sent anyway, so its
octets and the rest of its line are skipped (DISCARD/SKIP modes) to stay in step.

Other modes, entered when the session says so: AUTHENTICATE (`start_authenticate`: each line
is a base64 SASL response, `AuthenticateData`, until `end_authenticate`), IDLE (`start_idle`:
only "DONE" is expected, `IdleDone`), TLS (after a STARTTLS command: bytes pipelined after it
are dropped, as is anything received until `starttls_done()`, RFC 3501 6.2.1 / RFC 2595 3.1),
CLOSED (EOF, LOGOUT state or a `ProtocolViolation`: `ConnectionClosed` forever).

Bounds: a line over `max_line` (counting all lines of one command, literals excluded, RFC 7162 4)
is refused and skipped without buffering; `max_bad_commands` BADs in a row end the connection
with `ProtocolViolation` (the driver sends BYE).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from mailprime.proto import LocalProtocolError
from mailprime.proto.imap.command_types import Append, Command, StartTls
from mailprime.proto.imap.commands import CommandHead, command_head, parse_command
from mailprime.proto.imap.events import (
    NEED_DATA,
    AppendData,
    AppendEnd,
    AuthenticateData,
    BadCommand,
    CommandReceived,
    ConnectionClosed,
    Event,
    IdleDone,
    LiteralRequest,
    NeedData,
    ProtocolViolation,
    State,
)
from mailprime.proto.imap.limits import LITERAL_MINUS_MAX, Limits
from mailprime.proto.imap.parser import Announcement, LiteralPending, ParseError, Reader, find_announcement
from mailprime.proto.imap.response_types import (
    Response,
    ResponseCode,
    ResponseStatus,
    Tagged,
    WireSegment,
)
from mailprime.proto.imap.serializer import serialize, serialize_bytes

__all__ = ["ServerConnection"]

# How much of a skipped line's end is kept to find a literal announcement in it ("{n+}").
_TAIL = 32
_TOOBIG = ResponseCode("TOOBIG")


class _Mode(enum.Enum):
    COMMAND = "command"  # reading a line of a command
    AWAIT = "await"  # a literal waits for accept_literal() / reject_literal()
    LITERAL = "literal"  # reading an accepted command literal
    APPEND_DATA = "append data"  # streaming APPEND's message literal
    APPEND_TAIL = "append tail"  # reading the rest of the APPEND line
    SKIP = "skip"  # dropping the octets of a refused non-synchronizing literal
    DISCARD = "discard"  # dropping the rest of a refused command's line
    IDLE = "idle"
    AUTHENTICATE = "authenticate"
    TLS = "tls"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class _Pending:
    """The literal that waits for the session's decision."""

    tag: str
    size: int
    synchronizing: bool
    append: bool


@dataclass(frozen=True, slots=True)
class _Parsed:
    tag: str | None
    head: CommandHead | None = None
    command: Command | None = None
    error: ParseError | None = None


class ServerConnection:
    """One IMAP connection's protocol state, server side. See the module's theory of operation."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._state = State.NOT_AUTHENTICATED
        self._mode = _Mode.COMMAND
        self._utf8 = False
        self._buf = bytearray()
        self._eof = False
        self._events: deque[Event] = deque()
        self._bad_count = 0
        # The command being assembled: its lines (parts) and the literals between them.
        self._parts: list[bytes] = []
        self._literals: list[bytes] = []
        self._literal_total = 0
        self._pending: _Pending | None = None
        self._remaining = 0  # octets left in LITERAL, APPEND_DATA or SKIP
        self._literal_buf = bytearray()
        self._tail = b""  # end of the line being discarded
        self._mode_tag = ""  # the tag of APPEND (tail), IDLE or AUTHENTICATE

    # Properties and session calls ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def utf8(self) -> bool:
        """UTF-8 mode (RFC 9051 / RFC 6855) is on: names and strings are UTF-8, not mUTF-7."""
        return self._utf8

    def set_state(self, state: State) -> None:
        self._state = state
        if state is State.LOGOUT:
            self._close()

    def enable_utf8(self) -> None:
        """After ENABLE IMAP4rev2 or UTF8=ACCEPT was granted (RFC 9051 6.3.1, RFC 6855 3)."""
        self._utf8 = True

    def start_idle(self, tag: str) -> None:
        """The session sent "+ idling" for IDLE `tag` (RFC 2177 3): expect "DONE"."""
        self._require_between_commands("start_idle")
        self._mode, self._mode_tag = _Mode.IDLE, tag

    def start_authenticate(self, tag: str) -> None:
        """The session sent a SASL challenge for AUTHENTICATE `tag`: lines are responses now."""
        if self._mode is not _Mode.AUTHENTICATE:
            self._require_between_commands("start_authenticate")
        self._mode, self._mode_tag = _Mode.AUTHENTICATE, tag

    def end_authenticate(self) -> None:
        """The SASL exchange is over (the session answered the tag); idempotent."""
        if self._mode is _Mode.AUTHENTICATE:
            self._mode = _Mode.COMMAND

    def starttls_done(self) -> None:
        """The TLS handshake after STARTTLS finished (or STARTTLS was refused): read again."""
        if self._mode is _Mode.TLS:
            self._mode = _Mode.COMMAND

    def accept_literal(self, text: str = "Ready for literal data") -> bytes:
        """Take the literal of the last `LiteralRequest` or `Append`; returns the "+" line for a
        synchronizing literal (write it now), b"" for a non-synchronizing one."""
        pending = self._take_pending("accept_literal")
        self._remaining = pending.size
        if pending.append:
            self._reset_command()
            self._mode_tag = pending.tag
            self._mode = _Mode.APPEND_DATA if pending.size else _Mode.APPEND_TAIL
        else:
            self._mode = _Mode.LITERAL
            self._literal_buf = bytearray()
        return f"+ {text}\r\n".encode() if pending.synchronizing else b""

    def reject_literal(self, response: Tagged) -> bytes:
        """Refuse the pending literal with `response` (a tagged NO or BAD); returns its bytes."""
        pending = self._take_pending("reject_literal")
        self._reset_command()
        self._skip_or_resume(Announcement(pending.size, pending.synchronizing, False))
        return serialize_bytes(response, utf8=self._utf8)

    def send(self, response: Response) -> list[WireSegment]:
        """The wire segments of `response`, encoded for the connection's mode."""
        return serialize(response, utf8=self._utf8)

    # Input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the peer; b"" means EOF."""
        if not data:
            self._eof = True
            return
        if self._mode in (_Mode.TLS, _Mode.CLOSED) or self._eof:
            return  # RFC 3501 6.2.1: nothing sent before the TLS handshake is read
        self._buf += data

    def next_event(self) -> Event | NeedData:
        if self._events:
            return self._events.popleft()
        if self._mode is _Mode.AWAIT:
            raise LocalProtocolError("answer the literal first: accept_literal() or reject_literal()")
        while not self._events:
            if self._mode is _Mode.CLOSED:
                return ConnectionClosed()
            if not self._step():
                if self._eof:
                    self._close()
                    return ConnectionClosed()
                return NEED_DATA
        return self._events.popleft()

    # The modes ------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Advance by one unit of input; False when more bytes (or a decision) are needed."""
        mode = self._mode
        if mode is _Mode.COMMAND:
            return self._step_command()
        if mode in (_Mode.LITERAL, _Mode.APPEND_DATA, _Mode.SKIP):
            return self._step_octets()
        if mode is _Mode.APPEND_TAIL:
            return self._step_append_tail()
        if mode is _Mode.DISCARD:
            return self._step_discard()
        if mode is _Mode.IDLE:
            return self._step_idle()
        if mode is _Mode.AUTHENTICATE:
            return self._step_authenticate()
        return False  # AWAIT, TLS: wait

    def _read_line(self, budget: int, tag: str | None) -> bytes | None:
        """A line without its CRLF (a bare LF is taken too), or None. A line longer than `budget`
        is refused here: BadCommand, and the rest of it is skipped (None is returned)."""
        lf = self._buf.find(b"\n")
        if lf < 0:
            if len(self._buf) > budget:
                self._tail = bytes(self._buf[-_TAIL:])
                self._buf.clear()
                self._mode = _Mode.DISCARD
                self._bad(tag, "command line too long")
            return None
        line = bytes(self._buf[:lf])
        del self._buf[: lf + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > budget:
            self._mode = _Mode.COMMAND
            self._bad(tag, "command line too long")
            self._skip_or_resume(find_announcement(line[-_TAIL:]))
            return None
        return line

    def _step_command(self) -> bool:
        budget = self.limits.max_line - sum(len(p) for p in self._parts)
        head = self._parts[0] if self._parts else bytes(self._buf[: self.limits.max_line])
        line = self._read_line(budget, _tag_of(head))
        if line is None:
            if self._mode is not _Mode.COMMAND or self._events:
                self._reset_command()
                return True
            return False
        if not self._parts and not line:
            self._bad(None, "empty command line")
            return True
        self._parts.append(line)
        announcement = find_announcement(line)
        parsed = self._parse(open_literal=announcement is not None)
        if parsed.error is not None:
            self._refuse(parsed.tag, parsed.error, announcement)
        elif announcement is None:
            assert parsed.tag is not None and parsed.command is not None
            self._complete(parsed.tag, parsed.command)
        elif not announcement.in_range:
            self._refuse(parsed.tag, ParseError("literal size out of range"), announcement)
        else:
            assert parsed.tag is not None and parsed.head is not None
            self._announce(parsed.tag, parsed.head, parsed.command, announcement)
        return True

    def _parse(self, open_literal: bool) -> _Parsed:
        r = Reader(self._parts, self._literals, utf8=self._utf8, open_literal=open_literal,
                   max_nesting=self.limits.max_nesting)
        try:
            tag = r.tag()
        except ParseError as exc:
            return _Parsed(None, error=exc)
        head: CommandHead | None = None
        try:
            head = command_head(r, tag, self._state)
            command = parse_command(r, head)
        except LiteralPending:
            return _Parsed(tag, head)
        except ParseError as exc:
            return _Parsed(tag, error=exc)
        return _Parsed(tag, head, command)

    def _complete(self, tag: str, command: Command) -> None:
        self._reset_command()
        self._bad_count = 0
        if isinstance(command, StartTls):
            # RFC 3501 6.2.1 / RFC 2595 3.1: no command may ride in before the TLS handshake
            # (the IMAP form of CVE-2011-0411); whatever followed the line is dropped.
            self._buf.clear()
            self._mode = _Mode.TLS
        self._events.append(CommandReceived(tag, command))

    def _announce(self, tag: str, head: CommandHead, command: Command | None, found: Announcement) -> None:
        """A literal is announced and everything before it parsed: check it, then ask."""
        limits = self.limits
        if not found.synchronizing and not limits.literal_plus and found.size > LITERAL_MINUS_MAX:
            # RFC 7888 5: LITERAL- takes non-synchronizing literals of 4096 octets at most.
            self._refuse(tag, ParseError("non-synchronizing literal over 4096 octets", _TOOBIG), found)
            return
        if isinstance(command, Append):
            if found.size > limits.max_append:
                self._refuse(tag, ParseError("message too big", _TOOBIG, ResponseStatus.NO), found)
                return
            self._pending = _Pending(tag, found.size, found.synchronizing, append=True)
            self._mode = _Mode.AWAIT
            self._bad_count = 0
            self._events.append(CommandReceived(tag, command))
            return
        if found.binary:
            self._refuse(tag, ParseError("literal8 is only allowed for APPEND data"), found)
        elif len(self._literals) >= limits.max_literals:
            self._refuse(tag, ParseError("too many literals in one command"), found)
        elif self._literal_total + found.size > limits.max_literal:
            self._refuse(tag, ParseError("literal too big", _TOOBIG), found)
        else:
            self._pending = _Pending(tag, found.size, found.synchronizing, append=False)
            self._mode = _Mode.AWAIT
            self._events.append(LiteralRequest(tag, head.name, found.size, found.synchronizing))

    def _step_octets(self) -> bool:
        if self._remaining and not self._buf:
            return False
        take = min(self._remaining, len(self._buf))
        if self._mode is _Mode.APPEND_DATA:
            take = min(take, self.limits.append_chunk)
        chunk = bytes(self._buf[:take])
        del self._buf[:take]
        self._remaining -= take
        if self._mode is _Mode.APPEND_DATA:
            if chunk:
                self._events.append(AppendData(chunk))
            if not self._remaining:
                self._mode = _Mode.APPEND_TAIL
        elif self._mode is _Mode.LITERAL:
            self._literal_buf += chunk
            if not self._remaining:
                self._literals.append(bytes(self._literal_buf))
                self._literal_total += len(self._literal_buf)
                self._literal_buf = bytearray()
                self._mode = _Mode.COMMAND
        elif not self._remaining:  # SKIP
            self._mode = _Mode.DISCARD
        return True

    def _step_append_tail(self) -> bool:
        tag = self._mode_tag
        line = self._read_line(self.limits.max_line, tag)
        if line is None:
            return self._mode is not _Mode.APPEND_TAIL or bool(self._events)
        self._mode = _Mode.COMMAND
        if line:
            # RFC 3502 MULTIAPPEND is not offered: more after the message ends the command.
            self._bad(tag, "unexpected data after the APPEND message (MULTIAPPEND is not supported)")
            self._skip_or_resume(find_announcement(line[-_TAIL:]))
        else:
            self._bad_count = 0
            self._events.append(AppendEnd(tag))
        return True

    def _step_discard(self) -> bool:
        lf = self._buf.find(b"\n")
        if lf < 0:
            self._tail = (self._tail + bytes(self._buf))[-_TAIL:]
            self._buf.clear()
            return False
        end = (self._tail + bytes(self._buf[:lf]))
        del self._buf[: lf + 1]
        self._tail = b""
        end = end.removesuffix(b"\r")[-_TAIL:]
        self._mode = _Mode.COMMAND
        self._skip_or_resume(find_announcement(end))
        return True

    def _step_idle(self) -> bool:
        tag = self._mode_tag
        line = self._read_line(self.limits.max_line, tag)
        if line is None:
            return self._mode is not _Mode.IDLE or bool(self._events)
        self._mode = _Mode.COMMAND
        if line.upper() == b"DONE":
            self._bad_count = 0
            self._events.append(IdleDone(tag))
        else:
            # RFC 2177 3: only DONE may end IDLE; anything else ends it with BAD.
            self._bad(tag, "expected DONE to end IDLE")
            self._skip_or_resume(find_announcement(line[-_TAIL:]))
        return True

    def _step_authenticate(self) -> bool:
        tag = self._mode_tag
        line = self._read_line(self.limits.max_sasl_line, tag)
        if line is None:
            return self._mode is not _Mode.AUTHENTICATE or bool(self._events)
        if line == b"*":  # RFC 3501 6.2.2: the client cancels the exchange
            self._events.append(AuthenticateData(None))
            return True
        reader = Reader([line], [])
        try:
            data = reader.base64(line) if line else b""
        except ParseError as exc:
            self._mode = _Mode.COMMAND
            self._bad(tag, f"{exc.text} in AUTHENTICATE response")
            return True
        self._events.append(AuthenticateData(data))
        return True

    # Helpers --------------------------------------------------------------------------------

    def _refuse(self, tag: str | None, error: ParseError, found: Announcement | None) -> None:
        """Answer a command with its error and drop what is left of it."""
        self._reset_command()
        self._bad(tag, error.text, error.code, error.status)
        self._skip_or_resume(found)

    def _skip_or_resume(self, found: Announcement | None) -> None:
        """After a refusal at the end of a line: skip a non-synchronizing literal the client
        sends anyway, then the rest of its line; else read the next command."""
        if self._mode is _Mode.CLOSED or found is None or found.synchronizing:
            if self._mode is not _Mode.CLOSED:
                self._mode = _Mode.COMMAND
            return
        if not found.in_range:
            self._violation("non-synchronizing literal of impossible size")
            return
        self._mode = _Mode.SKIP
        self._remaining = found.size

    def _bad(self, tag: str | None, text: str, code: ResponseCode | None = None,
             status: ResponseStatus = ResponseStatus.BAD) -> None:
        if status is ResponseStatus.BAD:
            self._bad_count += 1
            if self._bad_count > self.limits.max_bad_commands:
                self._violation("too many bad commands")
                return
        self._events.append(BadCommand(tag, text, code, status))

    def _violation(self, text: str) -> None:
        self._events.append(ProtocolViolation(text))
        self._close()

    def _close(self) -> None:
        self._mode = _Mode.CLOSED
        self._buf.clear()
        self._reset_command()

    def _reset_command(self) -> None:
        self._parts = []
        self._literals = []
        self._literal_total = 0
        self._pending = None

    def _take_pending(self, what: str) -> _Pending:
        if self._mode is not _Mode.AWAIT or self._pending is None:
            raise LocalProtocolError(f"{what}: no literal is waiting")
        pending = self._pending
        self._pending = None
        return pending

    def _require_between_commands(self, what: str) -> None:
        if self._mode is not _Mode.COMMAND or self._parts:
            raise LocalProtocolError(f"{what}: not between commands")


def _tag_of(line: bytes) -> str | None:
    """The tag of a (maybe partial) command line, if it is complete and valid."""
    space = line.find(b" ")
    if space <= 0:
        return None
    try:
        return Reader([line[:space]], []).tag()
    except ParseError:
        return None
