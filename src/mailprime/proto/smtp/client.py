"""The SMTP client as a sans-IO state machine (RFC 5321, with RFC 2920 PIPELINING, RFC 3030
CHUNKING, RFC 3207 STARTTLS, RFC 3461 DSN, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 1870 SIZE).

    conn = ClientConnection("mx.sender.example")
    conn.receive_data(bytes_read)                  # b"" means the peer closed
    while (event := conn.next_event()) is not NEED_DATA:
        ...                                        # ReplyReceived(command, reply) / ConnectionClosed
    wire = conn.send(Ehlo())                       # bytes to write

Theory of operation. The connection is in one `ClientState`. `send(command)` consults
`_SEND_TABLE[(state, type(command))]`: a missing entry is a LocalProtocolError (our bug, never
the peer's). A permitted command is appended to the *pending* queue and may move the state
optimistically (MAIL opens the transaction at once, so RCPT can be pipelined behind it). Every
reply the server sends answers the command at the head of the queue (RFC 2920 3.1 keeps replies
in order), so `next_event` pops it and returns `ReplyReceived(command, reply)`; the reply may
move the state again (`_on_reply`: EHLO's 250 makes the session READY and records the
capabilities, DATA's 354 opens the body, STARTTLS's 220 forgets everything learnt so far).

More than one command may be outstanding only when the server offered PIPELINING, and only while
every outstanding command is one RFC 2920 3.1 allows to be followed (MAIL, RCPT, RSET, BDAT);
EHLO, DATA, STARTTLS, QUIT, NOOP and the end of message data each end a group.

Message bodies: after DATA's 354, `send_message_data` turns bare LF and bare CR into CRLF,
dot-stuffs (RFC 5321 4.5.2), and on the last piece adds the terminating "<CRLF>.<CRLF>", which is
then pending like a command (`EndOfData`). BDAT chunks (`Bdat`) are sent as given, with their
length; `LineEndNormaliser` is there for callers that want the same line ends in chunks.

A reply with no command waiting is a protocol error except 421 (RFC 5321 3.8: the server may
announce that it is closing at any time). A 421, a reply to QUIT, or EOF closes the connection.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass

from mailprime.proto import LocalProtocolError, RemoteProtocolError
from mailprime.proto.smtp import xtext
from mailprime.proto.smtp.replies import (
    Capabilities,
    ReplyLimits,
    ReplyReader,
    build_reply,
    parse_ehlo,
)
from mailprime.proto.smtp.types import Reply

# RFC 5321 4.5.3.1.3: a path (reverse-path or forward-path) is at most 256 octets, brackets
# included, so the address inside is at most 254.
MAX_PATH_OCTETS = 254
# RFC 3461 4.4: ENVID is at most 100 characters (before xtext encoding).
MAX_ENVID = 100
# RFC 3461 4.2: ORCPT is at most 500 characters.
MAX_ORCPT = 500


# Commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """Not sent: stands in the pending queue for the server's opening 220 (RFC 5321 3.1)."""


@dataclass(frozen=True, slots=True)
class Ehlo:
    """EHLO with the connection's helo name (RFC 5321 4.1.1.1)."""


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO, the fallback when EHLO is refused (RFC 5321 3.2)."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS (RFC 3207). After its 220 the driver runs the handshake, then sends EHLO again."""


@dataclass(frozen=True, slots=True)
class Mail:
    """MAIL FROM with ESMTP parameters; each needs its extension to have been offered.

    `sender` "" is the null reverse-path. `body` is "7BIT", "8BITMIME" or "BINARYMIME" (RFC 6152,
    RFC 3030); `ret` "FULL" or "HDRS" and `envid` (plain text, we xtext-encode it) are RFC 3461.
    """

    sender: str
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    requiretls: bool = False  # RFC 8689: the next hop must relay it over verified TLS only


@dataclass(frozen=True, slots=True)
class Rcpt:
    """RCPT TO with RFC 3461 NOTIFY (e.g. ("SUCCESS", "FAILURE") or ("NEVER",)) and ORCPT, the
    latter already in wire form "addr-type;xtext"."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Data:
    """DATA; on 354 the body is sent with `send_message_data`."""


@dataclass(frozen=True, slots=True)
class EndOfData:
    """Not sent by the caller: the final "." of a DATA body, pending until its reply."""


@dataclass(frozen=True, slots=True, repr=False)
class Bdat:
    """One BDAT chunk (RFC 3030 2); `last` adds LAST and completes the message."""

    chunk: bytes
    last: bool = False

    def __repr__(self) -> str:  # chunks can be megabytes; logs want the size
        return f"Bdat(<{len(self.chunk)} octets>, last={self.last})"


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


Command = Greeting | Ehlo | Helo | StartTls | Mail | Rcpt | Data | EndOfData | Bdat | Rset | Noop | Quit
# RFC 2920 3.1: commands that may be followed by others before their reply arrives.
_PIPELINABLE: tuple[type, ...] = (Mail, Rcpt, Rset, Bdat)


# Events -----------------------------------------------------------------------------------


class _NeedData:
    """Sentinel type of NEED_DATA."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """A complete reply and the command it answers (None: an unsolicited 421).

    `capabilities` is set on a positive reply to EHLO (or HELO, then all False).
    """

    command: Command | None
    reply: Reply
    capabilities: Capabilities | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection (EOF was fed); any partial reply is discarded."""

    pending: int = 0  # commands that never got their reply


Event = ReplyReceived | ConnectionClosed


# States -----------------------------------------------------------------------------------


class ClientState(enum.Enum):
    GREETING = "greeting"  # waiting for the server's 220
    REFUSED = "refused"  # greeting was not 220 (RFC 5321 3.1: 554); only QUIT makes sense
    HELLO = "hello"  # must say EHLO/HELO (at start, after STARTTLS, after a refused EHLO)
    READY = "ready"  # no mail transaction open
    MAIL = "mail"  # MAIL sent: RCPT, DATA, BDAT or RSET may follow
    DATA_BODY = "data_body"  # DATA got 354: only message data may be sent
    BDAT = "bdat"  # a BDAT without LAST was sent: more BDAT or RSET
    CLOSED = "closed"  # QUIT answered, 421 received or EOF


_S = ClientState
# (state, command type) -> state after sending. Replies may move the state further (_on_reply).
_SEND_TABLE: dict[tuple[ClientState, type], ClientState] = {
    (_S.REFUSED, Quit): _S.REFUSED,
    (_S.HELLO, Ehlo): _S.HELLO,
    (_S.HELLO, Helo): _S.HELLO,
    (_S.HELLO, Noop): _S.HELLO,
    (_S.HELLO, Quit): _S.HELLO,
    (_S.READY, Ehlo): _S.READY,
    (_S.READY, Helo): _S.READY,
    (_S.READY, StartTls): _S.READY,
    (_S.READY, Mail): _S.MAIL,
    (_S.READY, Rset): _S.READY,
    (_S.READY, Noop): _S.READY,
    (_S.READY, Quit): _S.READY,
    (_S.MAIL, Rcpt): _S.MAIL,
    (_S.MAIL, Data): _S.MAIL,
    (_S.MAIL, Bdat): _S.BDAT,  # refined for LAST in send()
    (_S.MAIL, Rset): _S.READY,
    (_S.MAIL, Noop): _S.MAIL,
    (_S.MAIL, Quit): _S.MAIL,
    (_S.BDAT, Bdat): _S.BDAT,
    (_S.BDAT, Rset): _S.READY,
    (_S.BDAT, Quit): _S.BDAT,
}


class ClientConnection:
    """One SMTP client connection's protocol state; see the module docstring."""

    def __init__(self, helo_name: str, limits: ReplyLimits | None = None) -> None:
        if not helo_name or any(c.isspace() for c in helo_name) or not helo_name.isascii():
            # RFC 5321 4.1.1.1: the EHLO argument is a domain or an address literal.
            raise LocalProtocolError(f"invalid helo name {helo_name!r}")
        self.helo_name = helo_name
        self.state = ClientState.GREETING
        self.capabilities = Capabilities()
        self.tls_started = False  # set by STARTTLS's 220: STARTTLS may not be sent twice
        self._reader = ReplyReader(limits)
        self._pending: deque[Command] = deque([Greeting()])
        self._eof = False
        self._smtputf8_transaction = False
        self._body = _BodyEncoder()

    # Input ---------------------------------------------------------------------------------

    @property
    def pending(self) -> tuple[Command, ...]:
        """Commands sent whose replies have not arrived, oldest first."""
        return tuple(self._pending)

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the socket; b"" means the peer closed its side."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA when more input is needed (or nothing is awaited)."""
        if self.state is ClientState.CLOSED:
            # Anything after QUIT's 221 or a 421 is ignored: there is nobody left to answer.
            return ConnectionClosed() if self._eof else NEED_DATA
        raw = self._reader.next_reply()
        if raw is None:
            if self._eof:
                self.state = ClientState.CLOSED
                lost = len(self._pending)
                self._pending.clear()
                return ConnectionClosed(lost)
            return NEED_DATA
        # RFC 2034 4: greeting and EHLO/HELO replies carry no enhanced codes; everything after
        # an EHLO that offered ENHANCEDSTATUSCODES does.
        head = self._pending[0] if self._pending else None
        enhanced = self.capabilities.enhancedstatuscodes and not isinstance(head, Greeting | Ehlo | Helo)
        reply = build_reply(raw, enhanced_codes=enhanced)
        if head is None:
            if reply.code != 421:
                raise RemoteProtocolError(f"unexpected reply with no command pending: {reply.one_line()}")
            self._close()
            return ReplyReceived(None, reply)
        self._pending.popleft()
        return self._on_reply(head, reply)

    def _close(self) -> None:
        self.state = ClientState.CLOSED
        self._pending.clear()

    def _on_reply(self, command: Command, reply: Reply) -> ReplyReceived:
        if reply.code == 421:
            # RFC 5321 3.8: service closing; whatever else was pipelined will not be answered.
            self._close()
            return ReplyReceived(command, reply)
        caps: Capabilities | None = None
        match command:
            case Greeting():
                self.state = ClientState.HELLO if reply.code == 220 else ClientState.REFUSED
            case Ehlo() if reply.code == 250:
                caps = self.capabilities = parse_ehlo(reply)
                self.state = ClientState.READY
            case Helo() if reply.code == 250:
                caps = self.capabilities = Capabilities()
                self.state = ClientState.READY
            case Ehlo() | Helo():
                self.state = ClientState.HELLO  # RFC 5321 3.2: try HELO, or give up
            case StartTls() if reply.code == 220:
                if self._reader.buffered:
                    # RFC 3207 5 / CVE-2011-0411 style injection: anything after the 220 was sent
                    # in plaintext and must not be taken as if it came over TLS.
                    raise RemoteProtocolError("data received after STARTTLS 220, before TLS")
                self.tls_started = True
                # RFC 3207 4.2: discard all knowledge obtained from the server before TLS.
                self.capabilities = Capabilities()
                self.state = ClientState.HELLO
            case Mail() if not reply.is_positive:
                # The transaction never opened; pipelined RCPT/DATA will get 503s.
                if self.state is ClientState.MAIL:
                    self.state = ClientState.READY
            case Data() if reply.code == 354:
                self.state = ClientState.DATA_BODY
                self._body = _BodyEncoder()
            case Quit():
                self._close()
            case _:
                pass
        return ReplyReceived(command, reply, caps)

    # Output --------------------------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """The wire form of `command`; raises LocalProtocolError if it is illegal now."""
        if isinstance(command, Greeting | EndOfData):
            raise LocalProtocolError(f"{type(command).__name__} is not sent by the caller")
        next_state = _SEND_TABLE.get((self.state, type(command)))
        if next_state is None:
            raise LocalProtocolError(f"cannot send {type(command).__name__} in state {self.state.value}")
        self._check_pipelining(command)
        wire = self._encode(command)
        if isinstance(command, Bdat) and command.last:
            next_state = ClientState.READY  # RFC 3030 2: LAST completes the transaction
        if isinstance(command, Mail):
            self._smtputf8_transaction = command.smtputf8
        self.state = next_state
        self._pending.append(command)
        return wire

    def _check_pipelining(self, command: Command) -> None:
        if not self._pending:
            return
        if not self.capabilities.pipelining:
            raise LocalProtocolError(
                f"cannot send {type(command).__name__} before the previous reply: no PIPELINING"
            )
        blocker = next((c for c in self._pending if not isinstance(c, _PIPELINABLE)), None)
        if blocker is not None:
            raise LocalProtocolError(
                f"cannot pipeline {type(command).__name__} behind {type(blocker).__name__} (RFC 2920 3.1)"
            )

    def _encode(self, command: Command) -> bytes:
        caps = self.capabilities
        match command:
            case Ehlo():
                return f"EHLO {self.helo_name}\r\n".encode("ascii")
            case Helo():
                return f"HELO {self.helo_name}\r\n".encode("ascii")
            case StartTls():
                if not caps.starttls or self.tls_started:
                    raise LocalProtocolError("STARTTLS not offered (or TLS already started)")
                return b"STARTTLS\r\n"
            case Mail():
                return self._encode_mail(command, caps)
            case Rcpt():
                return self._encode_rcpt(command, caps)
            case Data():
                return b"DATA\r\n"
            case Bdat():
                if not caps.chunking:
                    raise LocalProtocolError("BDAT needs CHUNKING (RFC 3030 2)")
                last = " LAST" if command.last else ""
                return f"BDAT {len(command.chunk)}{last}\r\n".encode("ascii") + command.chunk
            case Rset():
                return b"RSET\r\n"
            case Noop():
                return b"NOOP\r\n"
            case Quit():
                return b"QUIT\r\n"
        raise LocalProtocolError(f"cannot encode {command!r}")

    def _encode_mail(self, mail: Mail, caps: Capabilities) -> bytes:
        params: list[str] = []
        if mail.size is not None:
            _require(caps.size, "SIZE", "RFC 1870")
            if mail.size < 0:
                raise LocalProtocolError("negative SIZE")
            params.append(f"SIZE={mail.size}")
        if mail.body is not None:
            body = mail.body.upper()
            if body == "8BITMIME":
                _require(caps.eightbitmime, "8BITMIME", "RFC 6152")
            elif body == "BINARYMIME":
                _require(caps.binarymime and caps.chunking, "BINARYMIME", "RFC 3030 3")
            elif body != "7BIT":
                raise LocalProtocolError(f"unknown BODY value {mail.body!r}")
            params.append(f"BODY={body}")
        if mail.smtputf8:
            _require(caps.smtputf8, "SMTPUTF8", "RFC 6531")
            params.append("SMTPUTF8")
        if mail.ret is not None:
            _require(caps.dsn, "DSN", "RFC 3461")
            if mail.ret.upper() not in ("FULL", "HDRS"):
                raise LocalProtocolError(f"RET must be FULL or HDRS, not {mail.ret!r}")
            params.append(f"RET={mail.ret.upper()}")
        if mail.envid is not None:
            _require(caps.dsn, "DSN", "RFC 3461")
            if len(mail.envid) > MAX_ENVID or not mail.envid.isascii():
                raise LocalProtocolError("ENVID must be ASCII and at most 100 characters (RFC 3461 4.4)")
            params.append(f"ENVID={xtext.encode(mail.envid)}")
        if mail.requiretls:
            _require(caps.offers("REQUIRETLS"), "REQUIRETLS", "RFC 8689")
            params.append("REQUIRETLS")
        path = _path(mail.sender, smtputf8=mail.smtputf8, allow_null=True)
        return _line("MAIL FROM:", path, params, smtputf8=mail.smtputf8)

    def _encode_rcpt(self, rcpt: Rcpt, caps: Capabilities) -> bytes:
        params: list[str] = []
        if rcpt.notify:
            _require(caps.dsn, "DSN", "RFC 3461")
            values = [n.upper() for n in rcpt.notify]
            if any(v not in ("NEVER", "SUCCESS", "FAILURE", "DELAY") for v in values) or (
                "NEVER" in values and len(values) > 1
            ):
                # RFC 3461 4.1: NEVER or a combination of the other three.
                raise LocalProtocolError(f"invalid NOTIFY {rcpt.notify!r}")
            params.append("NOTIFY=" + ",".join(values))
        if rcpt.orcpt is not None:
            _require(caps.dsn, "DSN", "RFC 3461")
            addr_type, sep, value = rcpt.orcpt.partition(";")
            well_formed = bool(sep and _ATOM.fullmatch(addr_type) and xtext.is_xtext(value))
            if not well_formed or len(rcpt.orcpt) > MAX_ORCPT:
                raise LocalProtocolError(f"ORCPT must be 'addr-type;xtext' (RFC 3461 4.2): {rcpt.orcpt!r}")
            params.append(f"ORCPT={rcpt.orcpt}")
        utf8 = self._smtputf8_transaction
        path = _path(rcpt.address, smtputf8=utf8, allow_null=False)
        return _line("RCPT TO:", path, params, smtputf8=utf8)

    def send_message_data(self, data: bytes, *, final: bool = True) -> bytes:
        """A piece of the message after DATA's 354: line ends made CRLF, dot-stuffed; with `final`
        (the default: the whole message at once) followed by the terminating "<CRLF>.<CRLF>".

        Call it repeatedly with `final=False` to stream; line state carries across pieces.
        """
        if self.state is not ClientState.DATA_BODY:
            raise LocalProtocolError(f"message data is not allowed in state {self.state.value}")
        wire = self._body.encode(data)
        if final:
            wire += self._body.finish()
            self._pending.append(EndOfData())
            # RFC 5321 4.1.1.4: the final reply consumes the transaction, whatever it says.
            self.state = ClientState.READY
        return wire


def _require(offered: bool, keyword: str, rfc: str) -> None:
    if not offered:
        raise LocalProtocolError(f"the server did not offer {keyword} ({rfc})")


_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x20\x7f<>]")
# RFC 3461 4.2: addr-type = atom (in practice "rfc822" or "utf-8").
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


def _path(address: str, *, smtputf8: bool, allow_null: bool) -> str:
    """The address as "<...>", refusing anything that could break the command line."""
    if not address:
        if allow_null:
            return "<>"  # RFC 5321 4.5.5: null reverse-path for bounces
        raise LocalProtocolError("empty recipient address")
    # Quoted local parts may contain spaces; only CR, LF, NUL, controls and brackets are
    # outright dangerous, and none of them is legal in an unquoted mailbox anyway.
    unquoted = re.sub(r'"(?:[^"\\\r\n]|\\[^\r\n])*"', "", address)
    if _FORBIDDEN_IN_PATH.search(unquoted) or "\r" in address or "\n" in address or "\x00" in address:
        raise LocalProtocolError(f"address contains forbidden characters: {address!r}")
    if not address.isascii() and not smtputf8:
        raise LocalProtocolError(f"non-ASCII address without SMTPUTF8 (RFC 6531 3.2): {address!r}")
    if len(address.encode("utf-8")) > MAX_PATH_OCTETS:
        raise LocalProtocolError("address longer than RFC 5321 4.5.3.1.3 allows")
    return f"<{address}>"


def _line(verb: str, path: str, params: list[str], *, smtputf8: bool) -> bytes:
    text = " ".join([verb + path, *params]) + "\r\n"
    return text.encode("utf-8" if smtputf8 else "ascii")


class LineEndNormaliser:
    """Streaming conversion of every line end to CRLF: a bare LF and a bare CR each become CRLF
    (RFC 5321 2.3.8: CR and LF only ever occur together). Servers rightly refuse bare ones, since
    "<LF>.<LF>" and "<CR>.<CR>" are the tools of SMTP smuggling.

    Theory of operation: the only state is a CR that ended the previous piece, held back because
    whether it is a bare CR or half of CRLF depends on the next piece's first octet.
    """

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, data: bytes) -> bytes:
        if self._held_cr:
            data, self._held_cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._held_cr = data[:-1], True
        crlf = data.count(b"\r\n")
        # Fast path (C-speed counts): content we stored is already CRLF-only, nothing to change.
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            data = _LINE_END.sub(b"\r\n", data)
        return data

    def finish(self) -> bytes:
        """The held CR, as the line end it stands for."""
        held, self._held_cr = self._held_cr, False
        return b"\r\n" if held else b""


_LINE_END = re.compile(rb"\r\n|\r|\n")


class _BodyEncoder:
    """Streaming DATA body: line ends normalised, then dot-stuffed (RFC 5321 4.5.2).

    Theory of operation: after normalisation every line end is CRLF and no piece ends inside
    one, so "<CRLF>." can be stuffed piece by piece; the one bit carried across pieces is whether
    the next octet begins a line (then a leading "." is doubled too).
    """

    def __init__(self) -> None:
        self._lines = LineEndNormaliser()
        self._at_line_start = True

    def _stuff(self, data: bytes) -> bytes:
        if not data:
            return b""
        out = data.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and out.startswith(b"."):
            out = b"." + out
        self._at_line_start = out.endswith(b"\r\n")
        return out

    def encode(self, data: bytes) -> bytes:
        return self._stuff(self._lines.feed(data))

    def finish(self) -> bytes:
        """The rest of the body and "<CRLF>.<CRLF>", sharing the body's last CRLF if it has one."""
        out = self._stuff(self._lines.finish())
        return out + (b".\r\n" if self._at_line_start else b"\r\n.\r\n")
