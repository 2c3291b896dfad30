"""The SMTP server protocol core, sans-IO (RFC 5321 with PIPELINING 2920, SIZE 1870, 8BITMIME 6152,
SMTPUTF8 6531, ENHANCEDSTATUSCODES 2034, STARTTLS 3207, AUTH 4954, CHUNKING 3030 and DSN 3461).

Theory of operation
-------------------
`ServerConnection` turns received bytes into events and the application's replies into bytes,
h11-style: `receive_data(bytes)` (b"" is EOF), then `next_event()` until it returns `NEED_DATA`;
events that ask a decision (`Helo`, `StartTls`, `AuthRequest`, `Mail`, `Rcpt`, `DataStart`,
`DataEnd`, `EarlyTalker`) must be answered with `send(Reply)` (or `send(GO_AHEAD)` for
`DataStart`) before the next `next_event()`. That one rule keeps pipelined replies in command order
(RFC 2920 3.1) with no queue of the application's own.

Everything that needs no decision the core answers itself: syntax and sequence errors, NOOP,
HELP, VRFY (252), RSET, QUIT, the SASL challenges of PLAIN and LOGIN, BDAT's per-chunk 250, and
refusals found while a body streams (size, bare CR/LF, long lines, NUL). Those replies go to an
outgoing buffer, in order with the application's: `send()` returns them together with the reply
it writes, and `data_to_send()` returns whatever is left. Some self-answered things are also
reported as events (`Rset`, `Quit`, `DataChunk`, `DataAbort`, `ProtocolViolation`,
`ConnectionClosed`) so the application can follow along.

States: GREETING (nothing sent yet) -> CONNECTED (220 sent) -> READY (after HELO/EHLO) -> MAIL ->
RCPT -> DATA or BDAT (a body streams) -> READY. AUTH is the SASL exchange; TLS waits for
`tls_started()` after a 220 to STARTTLS, then everything restarts at CONNECTED (RFC 3207 4.2);
REFUSED follows a 554 greeting (only QUIT is served, RFC 5321 3.1); CLOSED is final.
Commands are dispatched through `_DISPATCH`, keyed by (state, verb); a known verb without an entry
gets the reply from `_REFUSALS` (or 503), an unknown one 500 and a strike against
`max_unknown_commands`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mailprime.proto import LocalProtocolError
from mailprime.proto.smtp.commands import CommandError, parse_bdat, parse_mail, parse_rcpt
from mailprime.proto.smtp.framing import AbortReason, DotReader, LineError, LineReader
from mailprime.proto.smtp.sasl import (
    Challenge,
    Credentials,
    SaslError,
    SaslFailure,
    SaslServer,
    offered_mechanisms,
)
from mailprime.proto.smtp.server_events import (
    GO_AHEAD,
    NEED_DATA,
    Answer,
    AuthRequest,
    ConnectionClosed,
    DataAbort,
    DataChunk,
    DataEnd,
    DataStart,
    EarlyTalker,
    Event,
    Helo,
    Mail,
    NeedData,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    StartTls,
)
from mailprime.proto.smtp.types import MailParams, Reply, ServerCapabilities, ServerLimits

__all__ = [  # the events are defined in server_events and re-exported here
    "GO_AHEAD", "NEED_DATA", "AbortReason", "Answer", "AuthRequest", "ConnectionClosed", "DataAbort",
    "DataChunk", "DataEnd", "DataStart", "EarlyTalker", "Event", "Helo", "Mail", "ProtocolViolation",
    "Quit", "Rcpt", "Rset", "ServerConnection", "StartTls", "State",
]

# RFC 4954 4: a SASL response line may be up to 12288 octets.
MAX_SASL_LINE = 12288


class State(enum.Enum):
    GREETING = "greeting"
    REFUSED = "refused"
    CONNECTED = "connected"
    READY = "ready"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    TLS = "tls"
    CLOSED = "closed"


class _Pending(enum.Enum):
    """Which event the application owes a reply to."""

    GREETING = "greeting"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA_START = "data_start"
    DATA_END = "data_end"


_PENDING_OF: dict[type[Event], _Pending] = {
    EarlyTalker: _Pending.GREETING,
    Helo: _Pending.HELO,
    StartTls: _Pending.STARTTLS,
    AuthRequest: _Pending.AUTH,
    Mail: _Pending.MAIL,
    Rcpt: _Pending.RCPT,
    DataStart: _Pending.DATA_START,
    DataEnd: _Pending.DATA_END,
}


class _Body(enum.Enum):
    DATA = "DATA"
    BDAT = "BDAT"


@dataclass(slots=True)
class _Chunk:
    """A BDAT chunk being read. Its octets are always consumed, even when the command is refused
    (RFC 3030 2), or they would be read as commands."""

    remaining: int
    size: int
    last: bool
    refusal: Reply | None = None  # answered after the chunk instead of 250
    refusal_ends_transaction: bool = False
    return_state: State = State.RCPT


_OK = Reply(250, "Ok", "2.0.0")
_DATA_GO_AHEAD = Reply(354, "End data with <CR><LF>.<CR><LF>")


class ServerConnection:
    """One SMTP server connection's protocol state. See the module docstring."""

    def __init__(
        self,
        capabilities: ServerCapabilities,
        limits: ServerLimits,
        *,
        tls_active: bool,
        auth_allowed: bool,
    ) -> None:
        self._caps = capabilities
        self._limits = limits
        self._tls = tls_active
        self._auth_allowed = auth_allowed
        self._mechanisms = offered_mechanisms(capabilities.auth_mechanisms)
        self._state = State.GREETING
        self._buf = bytearray()
        self._eof = False
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._pending: _Pending | None = None
        self._closing = False
        self._lines = LineReader()
        # session
        self._extended = False
        self._helo_extended = False  # of the Helo event waiting for its answer
        self._authenticated = False
        self._auth_failures = 0
        self._strikes = 0  # unknown commands and malformed lines
        self._transactions = 0
        self._sasl: SaslServer | None = None
        # transaction
        self._mail_params = MailParams()
        self._recipients = 0
        self._body: _Body | None = None
        self._body_size = 0
        self._reader: DotReader | None = None
        self._chunk: _Chunk | None = None
        self._spooling = False  # the application has said go-ahead and is storing the body

    # Public surface ------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def must_close(self) -> bool:
        """True once the connection is over (QUIT, a 421, EOF): write what is left and close."""
        return self._closing or self._state is State.CLOSED

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def receiving_body(self) -> bool:
        """A DATA or BDAT body is streaming (the driver applies its data timeout)."""
        return self._state in (State.DATA, State.BDAT)

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def authenticated(self) -> bool:
        return self._authenticated

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
            raise LocalProtocolError(f"reply to the previous event first ({self._pending.value})")
        while not self._events:
            if not _STEPS[self._state](self):
                return NEED_DATA
        event = self._events.popleft()
        self._pending = _PENDING_OF.get(type(event))
        return event

    def send(self, answer: Answer) -> bytes:
        """Writes the application's answer to the pending event (or the greeting, or a 421 at any
        time, RFC 5321 3.8) and returns every byte due on the wire, in order."""
        if self.must_close:
            raise LocalProtocolError("the connection is closing")
        if isinstance(answer, Reply) and not 200 <= answer.code <= 599:
            raise LocalProtocolError(f"not a reply code: {answer.code}")
        if isinstance(answer, Reply) and answer.code == 421:
            self._pending = None
            self._shut(answer)
            return self.data_to_send()
        pending = self._pending
        if pending is None:
            if self._state is not State.GREETING:
                raise LocalProtocolError("no event is waiting for a reply")
            pending = _Pending.GREETING
        _ON_ANSWER[pending](self, answer)
        self._pending = None
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Replies the core wrote itself that no `send()` has returned yet."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_started(self, *, auth_allowed: bool) -> None:
        """The TLS handshake after our 220 finished: forget everything learnt in plaintext
        (RFC 3207 4.2) and wait for a new EHLO."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() without an accepted STARTTLS")
        self._tls = True
        self._auth_allowed = auth_allowed
        self._extended = False
        self._authenticated = False
        self._reset_transaction()
        self._state = State.CONNECTED

    # Output helpers ------------------------------------------------------------------------

    def _write(self, reply: Reply) -> None:
        self._out += reply.to_bytes()

    def _shut(self, reply: Reply) -> None:
        """Sends a 421 and ends the connection (telling the session to drop a streaming body)."""
        self._abort(AbortReason.SERVER_CLOSED)
        self._write(reply)
        self._closing = True
        self._state = State.CLOSED

    def _error(self, reply: Reply, *, strike: bool = False) -> bool:
        """Answers an error the core found itself; strikes count towards the flood limit."""
        if strike:
            self._strikes += 1
            if self._strikes > self._limits.max_unknown_commands:
                reply = Reply(421, f"{self._caps.hostname} Too many errors, closing", "4.7.0")
        if reply.code == 421:
            self._shut(reply)
            self._events.append(ProtocolViolation(reply, close=True))
        else:
            self._write(reply)
            self._events.append(ProtocolViolation(reply))
        return True

    def _abort(self, reason: AbortReason) -> None:
        """Every body the application started to store ends in DataEnd or in DataAbort."""
        if self._spooling:
            self._spooling = False
            self._events.append(DataAbort(reason))

    def _reset_transaction(self) -> None:
        self._spooling = False
        self._mail_params = MailParams()
        self._recipients = 0
        self._body = None
        self._body_size = 0
        self._reader = None
        self._chunk = None

    def _after_transaction(self) -> None:
        self._reset_transaction()
        self._state = State.READY

    def _closed_by_peer(self) -> bool:
        self._abort(AbortReason.CONNECTION_LOST)
        self._state = State.CLOSED
        self._events.append(ConnectionClosed())
        return True

    # Steps, one per state (the values of _STEPS) -------------------------------------------

    def _step_greeting(self) -> bool:
        if self._buf:
            self._events.append(EarlyTalker())
            return True
        if self._eof:
            return self._closed_by_peer()
        return False

    def _step_closed(self) -> bool:
        self._events.append(ConnectionClosed())
        return True

    def _step_waiting(self) -> bool:
        return False

    def _step_command(self) -> bool:
        raw = self._lines.take(self._buf, self._limits.max_line)
        if raw is None:
            return self._closed_by_peer() if self._eof else False
        if isinstance(raw, LineError):
            return self._error(Reply(500, raw.value, "5.5.2"), strike=True)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(Reply(500, LineError.BAD_UTF8.value, "5.5.2"), strike=True)
        word, _, arg = line.partition(" ")
        verb = word.upper()
        handler = _DISPATCH.get((self._state, verb))
        if handler is not None:
            return handler(self, arg)
        if verb in _NOT_IMPLEMENTED:
            return self._error(Reply(502, f"{verb} not implemented", "5.5.1"))
        if verb not in _KNOWN_VERBS:
            return self._error(Reply(500, "Command not recognized", "5.5.2"), strike=True)
        refusal = _REFUSALS.get((self._state, verb), _BAD_SEQUENCE)
        return self._error(refusal, strike=self._state is State.REFUSED)

    def _step_sasl(self) -> bool:
        raw = self._lines.take(self._buf, MAX_SASL_LINE)
        if raw is None:
            return self._closed_by_peer() if self._eof else False
        self._state = State.READY
        if isinstance(raw, LineError):
            self._sasl = None
            code = "5.5.6" if raw is LineError.TOO_LONG else "5.5.2"  # RFC 4954 6
            return self._error(Reply(500, f"Authentication exchange: {raw.value}", code), strike=True)
        return self._sasl_step(lambda sasl: sasl.respond(raw.decode("ascii", "replace")))

    def _sasl_step(self, step: Callable[[SaslServer], Challenge | Credentials]) -> bool:
        sasl = self._sasl
        assert sasl is not None
        try:
            result = step(sasl)
        except SaslError as exc:
            self._sasl = None
            return self._error(_SASL_REFUSALS[exc.failure])
        if isinstance(result, Challenge):
            self._state = State.AUTH
            self._out += f"334 {result.text}\r\n".encode("ascii")  # RFC 4954 4: "334" SP [base64]
            return True
        self._sasl = None
        self._events.append(AuthRequest(result.mechanism, result.authzid, result.authcid, result.password))
        return True

    def _step_data(self) -> bool:
        reader = self._reader
        assert reader is not None
        content, at_end = reader.step(self._buf)
        if reader.too_big:
            self._abort(AbortReason.TOO_BIG)  # at once, so the session stops storing
        elif content:
            self._events.append(DataChunk(content))
        if at_end:
            failure = reader.failure
            if failure is None:
                self._spooling = False
                self._events.append(DataEnd())
            else:
                self._abort(failure)
                self._after_transaction()
                self._error(_DATA_REFUSALS[failure])
            return True
        if self._events:
            return True
        return self._closed_by_peer() if self._eof else False

    def _step_bdat(self) -> bool:
        chunk = self._chunk
        assert chunk is not None
        if chunk.remaining:
            take = min(chunk.remaining, len(self._buf))
            if not take:
                return self._closed_by_peer() if self._eof else False
            data = bytes(self._buf[:take])
            del self._buf[:take]
            chunk.remaining -= take
            if chunk.refusal is None:
                self._body_size += take
                self._events.append(DataChunk(data))
            return True
        self._chunk = None
        if chunk.refusal is not None:
            if chunk.refusal_ends_transaction:
                self._after_transaction()
            else:
                self._state = chunk.return_state
            return self._error(chunk.refusal)
        if chunk.last:
            self._spooling = False
            self._events.append(DataEnd())
        else:
            self._state = State.RCPT
            self._write(Reply(250, f"{chunk.size} octets received", "2.0.0"))
        return True

    # Commands (the values of _DISPATCH) -----------------------------------------------------

    def _cmd_helo(self, arg: str, extended: bool) -> bool:
        name = arg.strip(" ")
        if not name:
            verb = "EHLO" if extended else "HELO"
            return self._error(Reply(501, f"Syntax: {verb} hostname", "5.5.4"))
        self._helo_extended = extended
        self._events.append(Helo(name, extended))
        return True

    def _cmd_ehlo(self, arg: str) -> bool:
        return self._cmd_helo(arg, True)

    def _cmd_helo_plain(self, arg: str) -> bool:
        return self._cmd_helo(arg, False)

    def _cmd_starttls(self, arg: str) -> bool:
        if arg:
            return self._error(Reply(501, "Syntax: STARTTLS", "5.5.4"))
        if self._tls:
            return self._error(Reply(503, "TLS already active", "5.5.1"))
        if not self._caps.starttls:
            return self._error(Reply(502, "STARTTLS not available", "5.5.1"))
        self._events.append(StartTls())
        return True

    def _cmd_auth(self, arg: str) -> bool:
        mechanisms = self._mechanisms
        if not mechanisms:
            return self._error(Reply(502, "AUTH not available", "5.5.1"))
        if self._authenticated:  # RFC 4954 4: a second AUTH gets 503
            return self._error(Reply(503, "Already authenticated", "5.5.1"))
        if not self._auth_allowed:  # RFC 4954 6 (and 4: no plaintext passwords in the clear)
            return self._error(Reply(538, "Encryption required for this mechanism", "5.7.11"))
        name, _, initial = arg.partition(" ")
        mechanism = name.upper()
        if not mechanism:
            return self._error(Reply(501, "Syntax: AUTH mechanism [initial-response]", "5.5.4"))
        if mechanism not in mechanisms:
            return self._error(Reply(504, "Unrecognized authentication type", "5.5.4"))
        self._sasl = SaslServer(mechanism)
        return self._sasl_step(lambda sasl: sasl.start(initial or None))

    def _cmd_mail(self, arg: str) -> bool:
        if self._transactions >= self._limits.max_transactions:
            return self._error(Reply(421, "Too many messages in one connection, reconnect", "4.7.0"))
        try:
            command = parse_mail(arg, self._caps, self._limits.max_message_size, tls=self._tls)
        except CommandError as exc:
            return self._error(exc.reply)
        self._mail_params = command.params
        self._events.append(Mail(command.sender, command.params))
        return True

    def _cmd_rcpt(self, arg: str) -> bool:
        if self._recipients >= self._limits.max_recipients:  # RFC 5321 4.5.3.1.10
            return self._error(Reply(452, "Too many recipients", "4.5.3"))
        try:
            command = parse_rcpt(arg, self._caps, smtputf8=self._mail_params.smtputf8)
        except CommandError as exc:
            return self._error(exc.reply)
        self._events.append(Rcpt(command.recipient, command.params))
        return True

    def _cmd_data(self, arg: str) -> bool:
        if arg:
            return self._error(Reply(501, "Syntax: DATA", "5.5.4"))
        if self._body is _Body.BDAT:  # RFC 3030 2: DATA and BDAT are not mixed
            return self._error(Reply(503, "DATA and BDAT cannot be mixed", "5.5.1"))
        self._body = _Body.DATA
        self._events.append(DataStart(chunking=False))
        return True

    def _cmd_bdat(self, arg: str) -> bool:
        if not self._caps.chunking:
            return self._error(Reply(502, "BDAT not available", "5.5.1"))
        try:
            size, last = parse_bdat(arg)
        except CommandError as exc:
            return self._error(exc.reply)
        chunk = _Chunk(remaining=size, size=size, last=last, return_state=self._state)
        self._chunk = chunk
        self._state = State.BDAT
        if chunk.return_state is not State.RCPT:
            chunk.refusal = _REFUSALS.get((chunk.return_state, "DATA"), _BAD_SEQUENCE)
        elif self._body is _Body.DATA:
            chunk.refusal = Reply(503, "DATA and BDAT cannot be mixed", "5.5.1")
        elif self._body_size + size > self._limits.max_message_size:  # RFC 1870, RFC 3030 2
            chunk.refusal = _DATA_REFUSALS[AbortReason.TOO_BIG]
            chunk.refusal_ends_transaction = True
            self._abort(AbortReason.TOO_BIG)
        elif self._body is None:
            self._body = _Body.BDAT
            self._state = State.RCPT  # until the application's go-ahead
            self._events.append(DataStart(chunking=True))
        return True

    def _cmd_rset(self, arg: str) -> bool:
        if arg:
            return self._error(Reply(501, "Syntax: RSET", "5.5.4"))
        self._abort(AbortReason.ABANDONED)
        self._reset_transaction()
        if self._state is not State.CONNECTED:
            self._state = State.READY
        self._write(_OK)
        self._events.append(Rset())
        return True

    def _cmd_noop(self, arg: str) -> bool:
        self._write(_OK)  # RFC 5321 4.1.1.9: a parameter is ignored
        return True

    def _cmd_help(self, arg: str) -> bool:
        self._write(Reply(214, "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP", "2.0.0"))
        return True

    def _cmd_vrfy(self, arg: str) -> bool:
        if not arg.strip(" "):
            return self._error(Reply(501, "Syntax: VRFY address", "5.5.4"))
        # RFC 5321 3.5.3 and 7.3: 252 neither confirms nor denies.
        self._write(Reply(252, "Cannot VRFY user, but will accept message and attempt delivery", "2.5.0"))
        return True

    def _cmd_quit(self, arg: str) -> bool:
        self._abort(AbortReason.ABANDONED)
        self._write(Reply(221, f"{self._caps.hostname} closing connection", "2.0.0"))
        self._closing = True
        self._state = State.CLOSED
        self._events.append(Quit())
        return True

    # Answers to pending events (the values of _ON_ANSWER) -----------------------------------

    def _reply_of(self, answer: Answer) -> Reply:
        if not isinstance(answer, Reply):
            raise LocalProtocolError("GO_AHEAD answers DataStart only")
        return answer

    def _on_greeting(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        if reply.code not in (220, 554):
            raise LocalProtocolError("the greeting is 220, or 554 to refuse (RFC 5321 3.1)")
        self._write(reply)
        self._state = State.CONNECTED if reply.code == 220 else State.REFUSED

    def _on_helo(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        if _ok(reply) and self._helo_extended:
            # The core owns the extension list: it alone knows what it implements.
            reply = Reply(reply.code, reply.text, reply.enhanced, reply.lines + self._ehlo_keywords())
        self._write(reply)
        if _ok(reply):
            self._extended = self._helo_extended
            self._reset_transaction()
            self._state = State.READY

    def _ehlo_keywords(self) -> tuple[str, ...]:
        caps = self._caps
        keywords: list[str] = []
        if caps.pipelining:
            keywords.append("PIPELINING")
        keywords += [f"SIZE {self._limits.max_message_size}", "8BITMIME"]
        if caps.smtputf8:
            keywords.append("SMTPUTF8")
        keywords.append("ENHANCEDSTATUSCODES")
        if caps.starttls and not self._tls:
            keywords.append("STARTTLS")
        if self._auth_allowed and self._mechanisms:
            keywords.append("AUTH " + " ".join(self._mechanisms))
        if caps.chunking:
            keywords.append("CHUNKING")
        if caps.dsn:
            keywords.append("DSN")
        if caps.requiretls and self._tls:  # RFC 8689 4.1: only on TLS-protected sessions
            keywords.append("REQUIRETLS")
        return (*keywords, *caps.extra)

    def _on_starttls(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        self._write(reply)
        if reply.code == 220:
            # CVE-2011-0411: plaintext pipelined after STARTTLS must not run inside TLS.
            self._buf.clear()
            self._lines = LineReader()
            self._state = State.TLS

    def _on_auth(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        self._write(reply)
        if _ok(reply):
            self._authenticated = True
            return
        self._auth_failures += 1
        if self._auth_failures >= self._limits.max_auth_failures:
            self._error(Reply(421, "Too many authentication failures", "4.7.0"))

    def _on_mail(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        self._write(reply)
        if _ok(reply):
            self._transactions += 1
            self._state = State.MAIL
        else:
            self._mail_params = MailParams()

    def _on_rcpt(self, answer: Answer) -> None:
        reply = self._reply_of(answer)
        self._write(reply)
        if _ok(reply):
            self._recipients += 1
            self._state = State.RCPT

    def _on_data_start(self, answer: Answer) -> None:
        reply = _DATA_GO_AHEAD if answer is GO_AHEAD else self._reply_of(answer)
        if self._body is _Body.BDAT:
            chunk = self._chunk
            assert chunk is not None
            if answer is not GO_AHEAD and reply.code < 400:
                raise LocalProtocolError("answer BDAT's DataStart with GO_AHEAD or a refusal")
            self._state = State.BDAT
            if answer is GO_AHEAD:
                self._spooling = True
            else:  # the chunk is still read, then refused (RFC 3030 2)
                chunk.refusal, chunk.refusal_ends_transaction = reply, True
            return
        if reply.code < 400 and reply.code != 354:
            raise LocalProtocolError("answer DATA's DataStart with GO_AHEAD, 354 or a refusal")
        self._write(reply)
        if reply.code == 354:
            self._state = State.DATA
            self._spooling = True
            self._reader = DotReader(max_size=self._limits.max_message_size, max_line=self._limits.max_line)
            self._buf[0:0] = b"\r\n"  # the virtual line start, see data_reader
        # a refused DATA leaves the transaction as it was (RFC 5321 3.3)

    def _on_data_end(self, answer: Answer) -> None:
        self._write(self._reply_of(answer))
        self._after_transaction()


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


_Handler = Callable[[ServerConnection, str], bool]
_C, _R, _M, _T = State.CONNECTED, State.READY, State.MAIL, State.RCPT
_ANY = (_C, _R, _M, _T)

_DISPATCH: dict[tuple[State, str], _Handler] = {
    **{(s, "EHLO"): ServerConnection._cmd_ehlo for s in (_C, _R)},
    **{(s, "HELO"): ServerConnection._cmd_helo_plain for s in (_C, _R)},
    (_R, "STARTTLS"): ServerConnection._cmd_starttls,
    (_R, "AUTH"): ServerConnection._cmd_auth,
    (_R, "MAIL"): ServerConnection._cmd_mail,
    (_M, "RCPT"): ServerConnection._cmd_rcpt,
    (_T, "RCPT"): ServerConnection._cmd_rcpt,
    (_T, "DATA"): ServerConnection._cmd_data,
    **{(s, "BDAT"): ServerConnection._cmd_bdat for s in _ANY},  # checks order itself: see _Chunk
    **{(s, "RSET"): ServerConnection._cmd_rset for s in _ANY},
    **{(s, "NOOP"): ServerConnection._cmd_noop for s in _ANY},
    **{(s, "HELP"): ServerConnection._cmd_help for s in _ANY},
    **{(s, "VRFY"): ServerConnection._cmd_vrfy for s in _ANY},
    **{(s, "QUIT"): ServerConnection._cmd_quit for s in (*_ANY, State.REFUSED)},
}

_BAD_SEQUENCE = Reply(503, "Bad sequence of commands", "5.5.1")
_SEND_HELO = Reply(503, "Send HELO/EHLO first", "5.5.1")
_NEED_MAIL = Reply(503, "Need MAIL command", "5.5.1")
_IN_TRANSACTION = Reply(503, "Not allowed during a mail transaction", "5.5.1")
_REFUSALS: dict[tuple[State, str], Reply] = {
    **{(_C, v): _SEND_HELO for v in ("STARTTLS", "AUTH", "MAIL", "RCPT", "DATA")},
    (_R, "RCPT"): _NEED_MAIL,
    (_R, "DATA"): _NEED_MAIL,
    **{(s, "MAIL"): Reply(503, "Nested MAIL command", "5.5.1") for s in (_M, _T)},
    (_M, "DATA"): Reply(554, "No valid recipients", "5.5.1"),  # RFC 5321 3.3
    **{(s, v): _IN_TRANSACTION for s in (_M, _T) for v in ("EHLO", "HELO", "STARTTLS", "AUTH")},
}
_KNOWN_VERBS = frozenset({verb for _, verb in _DISPATCH} | {verb for _, verb in _REFUSALS})
# Known to RFC 5321 and friends but deliberately off (RFC 5321 7.3 for EXPN).
_NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"})

_SASL_REFUSALS: dict[SaslFailure, Reply] = {  # RFC 4954 4
    SaslFailure.CANCELLED: Reply(501, "Authentication cancelled", "5.7.0"),
    SaslFailure.BAD_BASE64: Reply(501, "Invalid base64 data", "5.5.2"),
    SaslFailure.MALFORMED: Reply(501, "Malformed authentication response", "5.5.2"),
}
_DATA_REFUSALS: dict[AbortReason, Reply] = {
    AbortReason.TOO_BIG: Reply(552, "Message size exceeds fixed maximum message size", "5.3.4"),
    AbortReason.BARE_NEWLINE: Reply(550, "Bare CR or LF not allowed in message, use CRLF", "5.5.2"),
    AbortReason.LINE_TOO_LONG: Reply(500, "Line too long (RFC 5321 4.5.3.1.6)", "5.5.2"),
    AbortReason.NUL: Reply(550, "NUL octets not allowed in message", "5.6.0"),
}

_STEPS: dict[State, Callable[[ServerConnection], bool]] = {
    State.GREETING: ServerConnection._step_greeting,
    State.REFUSED: ServerConnection._step_command,
    State.CONNECTED: ServerConnection._step_command,
    State.READY: ServerConnection._step_command,
    State.MAIL: ServerConnection._step_command,
    State.RCPT: ServerConnection._step_command,
    State.DATA: ServerConnection._step_data,
    State.BDAT: ServerConnection._step_bdat,
    State.AUTH: ServerConnection._step_sasl,
    State.TLS: ServerConnection._step_waiting,
    State.CLOSED: ServerConnection._step_closed,
}

_ON_ANSWER: dict[_Pending, Callable[[ServerConnection, Answer], None]] = {
    _Pending.GREETING: ServerConnection._on_greeting,
    _Pending.HELO: ServerConnection._on_helo,
    _Pending.STARTTLS: ServerConnection._on_starttls,
    _Pending.AUTH: ServerConnection._on_auth,
    _Pending.MAIL: ServerConnection._on_mail,
    _Pending.RCPT: ServerConnection._on_rcpt,
    _Pending.DATA_START: ServerConnection._on_data_start,
    _Pending.DATA_END: ServerConnection._on_data_end,
}
