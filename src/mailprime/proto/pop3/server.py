"""The POP3 server protocol core, sans-IO (RFC 1939 with CAPA and PIPELINING 2449, STLS 2595,
AUTH 5034 and the response codes of 2449 8 and 3206).

Theory of operation
-------------------
`ServerConnection` turns received bytes into events and the application's answers into bytes,
h11-style: `receive_data(bytes)` (b"" is EOF), then `next_event()` until it returns `NEED_DATA`.
The events that ask a decision (`StartTls`, `Authenticate`, `Retrieve`, `Update`) must be
answered with `send()` before the next `next_event()`; that keeps pipelined responses in
command order (RFC 2449 6.6) with no queue of the application's own. The greeting is the
first `send()`.

The core owns the maildrop listing: a successful login answers with the messages' sizes and
unique ids, numbered 1..n for the whole session (RFC 1939 5), and the core itself answers STAT,
LIST, UIDL, DELE, RSET, NOOP and CAPA, checks message numbers and remembers deletion marks. Only
message content needs the application: `Retrieve` is answered with CONTENT_FOLLOWS, after which
the application streams the stored message through `send_content()` (the core line-normalises
and byte-stuffs it, and for TOP reports `content_complete` once enough lines are out) and
finishes with `end_content()`; or, for RETR, sends a whole message it encoded ahead of time
(`multiline.encode_whole` or `encode_known`, as pieces) with `send_encoded()`; or it gives up mid-stream with
`abort_content()`, which ends the connection (the response cannot be completed honestly).
QUIT in TRANSACTION enters UPDATE and asks the application, through `Update`, to remove the
marked messages (RFC 1939 6); a connection that ends any other way updates nothing.

States: GREETING -> AUTHORIZATION -> TRANSACTION (after a login) -> UPDATE -> CLOSED. SASL is an
AUTH exchange waiting for the client's response; TLS waits for `tls_started()` after the +OK to
STLS, then everything restarts in AUTHORIZATION (RFC 2595 4); CONTENT is a RETR or TOP response
being streamed. Commands are dispatched through `_DISPATCH`, keyed by (state, verb); a known verb
without an entry gets "-ERR ... not valid in this state", an unknown one a strike against
`max_unknown_commands`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence

from mailprime.proto import LocalProtocolError
from mailprime.proto.pop3.events import (
    NEED_DATA,
    Authenticate,
    ConnectionClosed,
    Event,
    NeedData,
    ProtocolViolation,
    Quit,
    Retrieve,
    StartTls,
    Update,
)
from mailprime.proto.pop3.multiline import TERMINATOR, ContentEncoder, Piece, listing
from mailprime.proto.pop3.types import (
    CONTENT_FOLLOWS,
    Answer,
    LoginAccepted,
    MessageInfo,
    Pop3Capabilities,
    Pop3Limits,
    Reply,
    valid_uidl,
)
from mailprime.proto.smtp.framing import LineError, LineReader
from mailprime.proto.smtp.sasl import (
    Challenge,
    Credentials,
    SaslError,
    SaslServer,
    offered_mechanisms,
)

__all__ = [
    "NEED_DATA", "Authenticate", "ConnectionClosed", "Event", "ProtocolViolation", "Quit",
    "Retrieve", "ServerConnection", "StartTls", "State", "Update",
]


class State(enum.Enum):
    # Members are singletons: hashing by identity is correct and skips Enum's Python-level
    # __hash__, paid by every dispatch-table look-up (several per command).
    __hash__ = object.__hash__

    GREETING = "greeting"
    AUTHORIZATION = "authorization"
    SASL = "sasl"
    TLS = "tls"
    TRANSACTION = "transaction"
    CONTENT = "content"
    UPDATE = "update"
    CLOSED = "closed"


class _Pending(enum.Enum):
    """Which event the application owes an answer to."""

    __hash__ = object.__hash__  # as State's

    GREETING = "greeting"
    STLS = "stls"
    LOGIN = "login"
    RETRIEVE = "retrieve"
    UPDATE = "update"


_PENDING_OF: dict[type[Event], _Pending] = {
    StartTls: _Pending.STLS,
    Authenticate: _Pending.LOGIN,
    Retrieve: _Pending.RETRIEVE,
    Update: _Pending.UPDATE,
}

_PLAINTEXT_REFUSED = Reply.negative(
    "Plaintext authentication disallowed on non-secure connections, use STLS", "AUTH")
_WRONG_STATE = "Command not valid in this state"
# RFC 3206 4: a -ERR with no code or with [AUTH] to a login says the credentials were refused;
# [SYS/...] and [IN-USE] say the server could not decide, which is no reason to slow the client.
_FAILURE_CODES = (None, "AUTH")


class ServerConnection:
    """One POP3 server connection's protocol state. See the module docstring."""

    def __init__(self, capabilities: Pop3Capabilities, limits: Pop3Limits, *, tls_active: bool,
                 auth_allowed: bool) -> None:
        self._caps = capabilities
        self._limits = limits
        self._tls = tls_active
        self._auth_allowed = auth_allowed
        self._mechanisms = offered_mechanisms(capabilities.sasl_mechanisms)
        self._state = State.GREETING
        self._buf = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: _Pending | None = None
        self._closing = False
        self._lines = LineReader()
        self._strikes = 0  # unknown commands and malformed lines
        self._auth_failures = 0
        self._user: str | None = None  # the name of an accepted USER, waiting for PASS
        self._sasl: SaslServer | None = None
        self._maildrop: tuple[MessageInfo, ...] = ()
        self._deleted: set[int] = set()
        self._retrieving: Retrieve | None = None
        self._encoder: ContentEncoder | None = None

    # Public surface ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def must_close(self) -> bool:
        """True once the connection is over (QUIT, too many errors, EOF): write what is left and
        close."""
        return self._closing or self._state is State.CLOSED

    @property
    def awaiting_answer(self) -> bool:
        return self._pending is not None

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def auth_failures(self) -> int:
        return self._auth_failures

    @property
    def content_complete(self) -> bool:
        """TOP has sent the header section and the lines asked for: stop streaming."""
        return self._encoder is not None and self._encoder.done

    def receive_data(self, data: bytes) -> None:
        """Feeds received bytes; b"" means the peer closed its side."""
        if self._state in (State.CLOSED, State.TLS):
            return  # after close nothing matters; before the TLS handshake plaintext is dropped
        if not data:
            self._eof = True
        elif not self._eof:
            self._buf += data

    def next_event(self) -> Event | NeedData:
        if self._pending is not None:
            raise LocalProtocolError(f"answer the previous event first ({self._pending.value})")
        if self._state is State.CONTENT:
            raise LocalProtocolError("finish the content first (end_content or abort_content)")
        while not self._events:
            if not _STEPS[self._state](self):
                return NEED_DATA
        event = self._events.popleft()
        self._pending = _PENDING_OF.get(type(event))
        if isinstance(event, Retrieve):
            self._retrieving = event
        return event

    def send(self, answer: Answer) -> bytes:
        """Writes the application's answer to the pending event (or the greeting) and returns
        every byte due on the wire, in order."""
        if self.must_close:
            raise LocalProtocolError("the connection is closing")
        pending = self._pending
        if pending is None:
            if self._state is not State.GREETING:
                raise LocalProtocolError("no event is waiting for an answer")
            pending = _Pending.GREETING
        _ON_ANSWER[pending](self, answer)
        self._pending = None
        return self.data_to_send()

    def send_content(self, piece: bytes) -> bytes:
        """The next piece of the message being retrieved, as it goes on the wire."""
        if self._state is not State.CONTENT or self._encoder is None:
            raise LocalProtocolError("send_content() outside a RETR or TOP response")
        return self._encoder.encode(piece)

    def end_content(self) -> bytes:
        """Ends the RETR or TOP response (the terminating "." line) and goes on with the
        commands already received."""
        if self._state is not State.CONTENT or self._encoder is None:
            raise LocalProtocolError("end_content() outside a RETR or TOP response")
        out = self._encoder.finish()
        self._encoder = None
        self._retrieving = None
        self._state = State.TRANSACTION
        return out + self.data_to_send()

    def send_encoded(self, body: Sequence[Piece]) -> list[Piece]:
        """Sends and ends a RETR response in one go, its content encoded ahead of the command
        (`multiline.encode_whole` or `encode_known`; instead of `send_content` and
        `end_content`). Returns the pieces due on the wire, in order: the body's own (so a
        stored message is not copied here) and what the core wrote after them."""
        event, encoder = self._retrieving, self._encoder
        if (self._state is not State.CONTENT or event is None or event.lines is not None
                or encoder is None or encoder.started):
            raise LocalProtocolError("send_encoded() outside a RETR response not yet begun")
        if not body or not bytes(body[-1][-3:]).endswith(TERMINATOR):
            raise LocalProtocolError("send_encoded() takes what encode_whole() made")
        self._encoder = None
        self._retrieving = None
        self._state = State.TRANSACTION
        rest = self.data_to_send()
        return [*body, rest] if rest else list(body)

    def abort_content(self) -> None:
        """The content cannot be sent in full (storage failed mid-stream): the response stays
        unterminated and the connection must close, so no client mistakes it for the message."""
        if self._state is not State.CONTENT:
            raise LocalProtocolError("abort_content() outside a RETR or TOP response")
        self._encoder = None
        self._state = State.CLOSED
        self._closing = True

    def shutdown(self, reply: Reply) -> bytes:
        """Ends the connection between commands with a last -ERR (server shutting down): what
        was due is written first. Nothing is updated (RFC 1939 6)."""
        if self._state is State.CONTENT:
            raise LocalProtocolError("shutdown() inside a RETR or TOP response: abort_content()")
        if not self.must_close:
            self._pending = None
            self._write(reply)
            self._state = State.CLOSED
            self._closing = True
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Responses the core wrote itself that no `send()` has returned yet."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self, *, auth_allowed: bool) -> None:
        """The TLS handshake after our +OK to STLS finished: forget what was said in plaintext
        and start AUTHORIZATION anew (RFC 2595 4)."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() without an accepted STLS")
        self._tls = True
        self._auth_allowed = auth_allowed
        self._user = None
        self._state = State.AUTHORIZATION

    # Output helpers ------------------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _error(self, text: str, code: str | None = None, *, strike: bool = False) -> bool:
        """Answers an error the core found itself; strikes count towards the flood limit."""
        reply = Reply.negative(text, code)
        if strike:
            self._strikes += 1
            if self._strikes > self._limits.max_unknown_commands:
                return self._give_up(Reply.negative("Too many errors, closing"))
        self._write(reply)
        self._events.append(ProtocolViolation(reply))
        return True

    def _give_up(self, reply: Reply) -> bool:
        self._write(reply)
        self._state = State.CLOSED
        self._closing = True
        self._events.append(ProtocolViolation(reply, close=True))
        return True

    # Steps, one per state (the values of _STEPS) -------------------------------------------

    def _step_waiting(self) -> bool:
        return False

    def _step_closed(self) -> bool:
        self._events.append(ConnectionClosed())
        return True

    def _closed_by_peer(self) -> bool:
        self._state = State.CLOSED
        self._events.append(ConnectionClosed())
        return True

    def _step_command(self) -> bool:
        raw = self._lines.take(self._buf, self._limits.max_line)
        if raw is None:
            return self._closed_by_peer() if self._eof else False
        if isinstance(raw, LineError):
            text = "Command line too long (RFC 2449 4)" if raw is LineError.TOO_LONG else raw.value
            return self._error(text, strike=True)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(LineError.BAD_UTF8.value, strike=True)
        word, _, arg = line.partition(" ")
        verb = word.upper()
        handler = _DISPATCH.get((self._state, verb))
        if handler is not None:
            return handler(self, arg)
        if verb in _NOT_SUPPORTED:
            return self._error(f"{verb} not supported")
        if verb not in _KNOWN_VERBS:
            return self._error("Unknown command", strike=True)
        return self._error(_WRONG_STATE)

    def _step_sasl(self) -> bool:
        raw = self._lines.take(self._buf, self._limits.max_sasl_line)
        if raw is None:
            return self._closed_by_peer() if self._eof else False
        self._state = State.AUTHORIZATION
        if isinstance(raw, LineError):
            self._sasl = None
            return self._error(f"Authentication exchange: {raw.value}", strike=True)
        return self._sasl_step(lambda sasl: sasl.respond(raw.decode("ascii", "replace")))

    def _sasl_step(self, step: Callable[[SaslServer], Challenge | Credentials]) -> bool:
        sasl = self._sasl
        assert sasl is not None
        try:
            result = step(sasl)
        except SaslError as exc:
            self._sasl = None
            return self._error(exc.failure.value)
        if isinstance(result, Challenge):
            self._state = State.SASL
            self._out += f"+ {result.text}\r\n".encode("ascii")  # RFC 5034 4: "+" SP base64
            return True
        self._sasl = None
        self._events.append(Authenticate(result.mechanism, result.authzid, result.authcid,
                                         result.password))
        return True

    # Commands (the values of _DISPATCH) -----------------------------------------------------

    def _no_argument(self, verb: str, arg: str) -> bool:
        """True (after answering) if a command that takes no argument got one."""
        if arg:
            self._error(f"Syntax: {verb}")
            return True
        return False

    def _capability_lines(self) -> list[str]:
        # RFC 2449 5: what AUTHORIZATION offers is announced in both states, so one list.
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self._caps.stls and not self._tls:
            lines.append("STLS")
        if self._auth_allowed:
            lines.append("USER")
            if self._mechanisms:
                lines.append("SASL " + " ".join(self._mechanisms))
        lines.append(f"IMPLEMENTATION {self._caps.implementation}")
        return lines

    def _cmd_capa(self, arg: str) -> bool:
        if self._no_argument("CAPA", arg):
            return True
        self._out += listing(b"+OK Capability list follows\r\n", self._capability_lines())
        return True

    def _cmd_stls(self, arg: str) -> bool:
        if self._no_argument("STLS", arg):
            return True
        if self._tls:
            return self._error("TLS already active")
        if not self._caps.stls:
            return self._error("STLS not available")
        self._events.append(StartTls())
        return True

    def _cmd_user(self, arg: str) -> bool:
        if not self._auth_allowed:
            return self._error(_PLAINTEXT_REFUSED.text, _PLAINTEXT_REFUSED.code)
        name = arg.strip(" ")
        if not name or " " in name:
            return self._error("Syntax: USER name")
        # Always +OK: telling which names exist would help whoever guesses them.
        self._user = name
        self._write(Reply.positive())
        return True

    def _cmd_pass(self, arg: str) -> bool:
        if not self._auth_allowed:
            return self._error(_PLAINTEXT_REFUSED.text, _PLAINTEXT_REFUSED.code)
        user, self._user = self._user, None
        if user is None:
            return self._error("USER first")
        if not arg:
            return self._error("Syntax: PASS password")
        # RFC 1939 7: PASS has one argument, so spaces in it belong to the password.
        self._events.append(Authenticate("USER", "", user, arg))
        return True

    def _cmd_auth(self, arg: str) -> bool:
        if not self._auth_allowed:
            return self._error(_PLAINTEXT_REFUSED.text, _PLAINTEXT_REFUSED.code)
        name, _, initial = arg.partition(" ")
        mechanism = name.upper()
        if not mechanism:  # the pre-RFC 5034 listing some clients still ask for
            self._out += listing(b"+OK\r\n", self._mechanisms)
            return True
        if mechanism not in self._mechanisms:
            return self._error("Unrecognized authentication mechanism")
        self._user = None
        self._sasl = SaslServer(mechanism)
        return self._sasl_step(lambda sasl: sasl.start(initial or None))

    def _cmd_quit_authorization(self, arg: str) -> bool:
        self._write(Reply.positive(f"{self._caps.hostname} POP3 server signing off"))
        self._state = State.CLOSED
        self._closing = True
        self._events.append(Quit())
        return True

    def _cmd_quit_transaction(self, arg: str) -> bool:
        self._state = State.UPDATE  # RFC 1939 6
        self._events.append(Update(tuple(sorted(self._deleted))))
        return True

    def _totals(self) -> tuple[int, int]:
        kept = [info.size for n, info in enumerate(self._maildrop, 1) if n not in self._deleted]
        return len(kept), sum(kept)

    def _cmd_stat(self, arg: str) -> bool:
        if self._no_argument("STAT", arg):
            return True
        count, size = self._totals()
        self._write(Reply.positive(f"{count} {size}"))  # RFC 1939 5: exactly "+OK nn mm"
        return True

    def _message(self, arg: str) -> int | None:
        """The message number in `arg`, or None after answering why it is no good."""
        if not arg.isascii() or not arg.isdigit():
            self._error("Invalid message number")
            return None
        number = int(arg)
        if not 1 <= number <= len(self._maildrop):
            self._error(f"No such message, only {len(self._maildrop)} in maildrop")
            return None
        if number in self._deleted:
            self._error(f"Message {number} already deleted")
            return None
        return number

    def _cmd_list(self, arg: str) -> bool:
        count, size = self._totals()
        return self._scan_listing(arg, lambda info: str(info.size), f"{count} messages ({size} octets)")

    def _cmd_uidl(self, arg: str) -> bool:
        return self._scan_listing(arg, lambda info: info.uidl, "unique-id listing follows")

    def _scan_listing(self, arg: str, value: Callable[[MessageInfo], str], title: str) -> bool:
        """LIST and UIDL (RFC 1939 5, 7): one message's line, or every undeleted message's."""
        if arg:
            number = self._message(arg.strip(" "))
            if number is not None:
                self._write(Reply.positive(f"{number} {value(self._maildrop[number - 1])}"))
            return True
        lines = [f"{n} {value(info)}" for n, info in enumerate(self._maildrop, 1)
                 if n not in self._deleted]
        self._out += listing(Reply.positive(title).to_bytes(), lines)
        return True

    def _cmd_retr(self, arg: str) -> bool:
        number = self._message(arg.strip(" "))
        if number is not None:
            self._events.append(Retrieve(number, None, self._maildrop[number - 1].size))
        return True

    def _cmd_top(self, arg: str) -> bool:
        parts = arg.split()
        if len(parts) != 2:
            return self._error("Syntax: TOP message lines")
        if not parts[1].isascii() or not parts[1].isdigit():
            return self._error("Invalid number of lines")
        number = self._message(parts[0])
        if number is not None:
            self._events.append(Retrieve(number, int(parts[1]), self._maildrop[number - 1].size))
        return True

    def _cmd_dele(self, arg: str) -> bool:
        number = self._message(arg.strip(" "))
        if number is not None:
            self._deleted.add(number)
            self._write(Reply.positive(f"Message {number} deleted"))
        return True

    def _cmd_rset(self, arg: str) -> bool:
        if self._no_argument("RSET", arg):
            return True
        self._deleted.clear()
        count, size = self._totals()
        self._write(Reply.positive(f"Maildrop has {count} messages ({size} octets)"))
        return True

    def _cmd_noop(self, arg: str) -> bool:
        if not self._no_argument("NOOP", arg):
            self._write(Reply.positive())
        return True

    # Answers to pending events (the values of _ON_ANSWER) -----------------------------------

    @staticmethod
    def _reply_of(answer: Answer, what: str) -> Reply:
        if not isinstance(answer, Reply):
            raise LocalProtocolError(f"answer {what} with a Reply")
        return answer

    def _on_greeting(self, answer: Answer) -> None:
        reply = self._reply_of(answer, "the greeting")
        self._write(reply)
        if reply.ok:
            self._state = State.AUTHORIZATION
        else:
            self._state = State.CLOSED
            self._closing = True

    def _on_stls(self, answer: Answer) -> None:
        reply = self._reply_of(answer, "StartTls")
        self._write(reply)
        if reply.ok:
            # CVE-2011-0411 (and RFC 2595 4): plaintext pipelined after STLS must not run
            # inside TLS.
            self._buf.clear()
            self._lines = LineReader()
            self._state = State.TLS

    def _on_login(self, answer: Answer) -> None:
        if isinstance(answer, LoginAccepted):
            bad = next((m.uidl for m in answer.maildrop if not valid_uidl(m.uidl)), None)
            if bad is not None:
                raise LocalProtocolError(f"not a valid UIDL (RFC 1939 7): {bad!r}")
            self._maildrop = answer.maildrop
            self._deleted.clear()
            self._state = State.TRANSACTION
            count, size = self._totals()
            self._write(Reply.positive(f"Maildrop has {count} messages ({size} octets)"))
            return
        reply = self._reply_of(answer, "Authenticate")
        if reply.ok:
            raise LocalProtocolError("answer a successful Authenticate with LoginAccepted")
        self._write(reply)
        if reply.code in _FAILURE_CODES:
            self._auth_failures += 1
            if self._auth_failures >= self._limits.max_auth_failures:
                self._state = State.CLOSED
                self._closing = True

    def _on_retrieve(self, answer: Answer) -> None:
        event = self._retrieving
        assert event is not None
        if answer is CONTENT_FOLLOWS:
            if event.lines is None:  # the hot path: `Reply.positive(f"{size} octets")`, faster
                self._out += b"+OK %d octets\r\n" % event.size
            else:
                self._write(Reply.positive("Top of message follows"))
            self._encoder = ContentEncoder(event.lines)
            self._state = State.CONTENT
            return
        reply = self._reply_of(answer, "Retrieve")
        if reply.ok:
            raise LocalProtocolError("answer Retrieve with CONTENT_FOLLOWS or a -ERR")
        self._retrieving = None
        self._write(reply)

    def _on_update(self, answer: Answer) -> None:
        self._write(self._reply_of(answer, "Update"))
        self._state = State.CLOSED
        self._closing = True


_Handler = Callable[[ServerConnection, str], bool]
_A, _T = State.AUTHORIZATION, State.TRANSACTION

_DISPATCH: dict[tuple[State, str], _Handler] = {
    **{(s, "CAPA"): ServerConnection._cmd_capa for s in (_A, _T)},
    (_A, "STLS"): ServerConnection._cmd_stls,
    (_A, "USER"): ServerConnection._cmd_user,
    (_A, "PASS"): ServerConnection._cmd_pass,
    (_A, "AUTH"): ServerConnection._cmd_auth,
    (_A, "QUIT"): ServerConnection._cmd_quit_authorization,
    (_T, "STAT"): ServerConnection._cmd_stat,
    (_T, "LIST"): ServerConnection._cmd_list,
    (_T, "UIDL"): ServerConnection._cmd_uidl,
    (_T, "RETR"): ServerConnection._cmd_retr,
    (_T, "TOP"): ServerConnection._cmd_top,
    (_T, "DELE"): ServerConnection._cmd_dele,
    (_T, "RSET"): ServerConnection._cmd_rset,
    (_T, "NOOP"): ServerConnection._cmd_noop,
    (_T, "QUIT"): ServerConnection._cmd_quit_transaction,
}
_KNOWN_VERBS = frozenset(verb for _, verb in _DISPATCH)
# Known but deliberately off, answered without a strike: APOP (RFC 1939 7, MD5 of a shared secret
# kept in the clear on the server), and LAST and RPOP, which RFC 1939 removed (fetchmail still
# tries LAST before UIDL).
_NOT_SUPPORTED = frozenset({"APOP", "LAST", "RPOP"})

_STEPS: dict[State, Callable[[ServerConnection], bool]] = {
    State.GREETING: ServerConnection._step_waiting,
    State.AUTHORIZATION: ServerConnection._step_command,
    State.SASL: ServerConnection._step_sasl,
    State.TLS: ServerConnection._step_waiting,
    State.TRANSACTION: ServerConnection._step_command,
    State.CONTENT: ServerConnection._step_waiting,
    State.UPDATE: ServerConnection._step_waiting,
    State.CLOSED: ServerConnection._step_closed,
}

_ON_ANSWER: dict[_Pending, Callable[[ServerConnection, Answer], None]] = {
    _Pending.GREETING: ServerConnection._on_greeting,
    _Pending.STLS: ServerConnection._on_stls,
    _Pending.LOGIN: ServerConnection._on_login,
    _Pending.RETRIEVE: ServerConnection._on_retrieve,
    _Pending.UPDATE: ServerConnection._on_update,
}
