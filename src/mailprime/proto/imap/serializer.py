"""Responses to bytes (RFC 3501 7 and 9, RFC 9051 7 and 9).

`serialize` returns wire segments: bytes (consecutive ones merged) and `StreamedLiteral`s, each
after its "{size}\\r\\n" header, whose octets the driver copies from the source itself.
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime

from mailprime.proto import LocalProtocolError
from mailprime.proto.imap import mutf7
from mailprime.proto.imap.parser import ASTRING_CHARS, MONTHS
from mailprime.proto.imap.response_types import (
    Atom,
    Continuation,
    DateTime,
    Flag,
    Juxtaposed,
    Literal,
    MailboxName,
    NilType,
    ParenList,
    Response,
    ResponseCode,
    StreamedLiteral,
    String,
    Tagged,
    Untagged,
    UntaggedStatus,
    Value,
    WireSegment,
)

# Quoted strings longer than this are sent as literals: RFC 3501 and 9051 set no bound, but
# long quoted strings are where clients' line buffers end (RFC 2683 3.2.1.5 is about lines).
MAX_QUOTED = 1024


class _Out:
    """Collects segments, merging adjacent bytes."""

    def __init__(self) -> None:
        self.segments: list[WireSegment] = []
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data

    def stream(self, literal: StreamedLiteral) -> None:
        self._buf += b"~" if literal.binary else b""
        self._buf += b"{%d}\r\n" % literal.size
        self.segments.append(bytes(self._buf))
        self._buf.clear()
        self.segments.append(literal)

    def done(self) -> list[WireSegment]:
        if self._buf:
            self.segments.append(bytes(self._buf))
        return self.segments


def serialize(response: Response, *, utf8: bool = False) -> list[WireSegment]:
    """The wire form of one response. `utf8`: RFC 9051 / RFC 6855 UTF-8 mode is on."""
    out = _Out()
    if isinstance(response, Tagged):
        out.write(response.tag.encode("ascii") + b" " + response.status.value.encode("ascii"))
        _resp_text(out, response.code, response.text, utf8)
    elif isinstance(response, UntaggedStatus):
        out.write(b"* " + response.status.value.encode("ascii"))
        _resp_text(out, response.code, response.text, utf8)
    elif isinstance(response, Untagged):
        if not response.values:
            raise LocalProtocolError("an untagged response needs at least one value")
        out.write(b"*")
        for value in response.values:
            out.write(b" ")
            _value(out, value, utf8)
    elif isinstance(response, Continuation):
        out.write(b"+ ")
        if response.data is not None:
            out.write(binascii.b2a_base64(response.data, newline=False))
        else:
            out.write(_text(response.text, utf8))
    else:  # pragma: no cover - exhaustive over Response
        raise LocalProtocolError(f"not a response: {response!r}")
    out.write(b"\r\n")
    return out.done()


def serialize_bytes(response: Response, *, utf8: bool = False) -> bytes:
    """For responses without streamed literals (status lines, continuations)."""
    segments = serialize(response, utf8=utf8)
    if any(not isinstance(s, bytes) for s in segments):
        raise LocalProtocolError("this response streams a literal; use serialize()")
    return b"".join(s for s in segments if isinstance(s, bytes))


def _text(text: str, utf8: bool) -> bytes:
    """resp-text's text: no CR/LF (RFC 3501 9 TEXT-CHAR); UTF-8 only in UTF-8 mode (RFC 9051 9)."""
    clean = text.replace("\r", " ").replace("\n", " ")
    return clean.encode("utf-8") if utf8 else clean.encode("ascii", "replace")


def _resp_text(out: _Out, code: ResponseCode | None, text: str, utf8: bool) -> None:
    if code is not None:
        out.write(b" [" + code.name.encode("ascii"))
        for arg in code.args:
            out.write(b" ")
            if isinstance(arg, (Literal, StreamedLiteral)):
                raise LocalProtocolError("a response code cannot hold a literal")
            _value(out, arg, utf8)
        out.write(b"]")
    if text:
        out.write(b" " + _text(text, utf8))


def _value(out: _Out, value: Value, utf8: bool) -> None:
    if isinstance(value, bool):
        raise LocalProtocolError("booleans are not IMAP values")
    if isinstance(value, int):
        if value < 0:
            raise LocalProtocolError("IMAP numbers are unsigned")
        out.write(b"%d" % value)
    elif isinstance(value, Atom):
        out.write(_raw(value.text))
    elif isinstance(value, Flag):
        out.write(_raw(value.name))
    elif isinstance(value, NilType):
        out.write(b"NIL")
    elif isinstance(value, String):
        raw = value.value.encode("utf-8") if isinstance(value.value, str) else value.value
        _string(out, raw, utf8)
    elif isinstance(value, Literal):
        out.write((b"~{%d}\r\n" if value.binary else b"{%d}\r\n") % len(value.data) + value.data)
    elif isinstance(value, StreamedLiteral):
        out.stream(value)
    elif isinstance(value, ParenList):
        out.write(b"(")
        for i, item in enumerate(value.items):
            if i:
                out.write(b" ")
            _value(out, item, utf8)
        out.write(b")")
    elif isinstance(value, Juxtaposed):
        if not value.items:  # RFC 3501 9: 1*body, 1*address
            raise LocalProtocolError("a back-to-back list needs at least one item")
        for item in value.items:
            if not isinstance(item, ParenList):  # two atoms back to back would read as one
                raise LocalProtocolError(f"only parenthesised lists stand back to back, not {item!r}")
            _value(out, item, utf8)
    elif isinstance(value, MailboxName):
        _mailbox(out, value.name, utf8)
    elif isinstance(value, DateTime):
        out.write(b'"' + format_date_time(value.value).encode("ascii") + b'"')
    else:  # pragma: no cover - exhaustive over Value
        raise LocalProtocolError(f"not an IMAP value: {value!r}")


def _raw(text: str) -> bytes:
    """An atom's octets; a CR or LF in one would let data forge responses, so it is a bug."""
    if "\r" in text or "\n" in text or not text.isascii():
        raise LocalProtocolError(f"not an atom: {text!r}")
    return text.encode("ascii")


def _quotable(raw: bytes, utf8: bool) -> bool:
    if len(raw) > MAX_QUOTED or b"\r" in raw or b"\n" in raw or b"\x00" in raw:
        return False
    if raw.isascii():
        return True
    if not utf8:
        return False  # RFC 3501 9: quoted strings are 7-bit; 8-bit goes in a literal
    try:
        raw.decode("utf-8")  # RFC 9051 9: QUOTED-CHAR includes UTF8-2..4
    except UnicodeDecodeError:
        return False
    return True


def _string(out: _Out, raw: bytes, utf8: bool) -> None:
    if _quotable(raw, utf8):
        out.write(b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
    else:
        out.write(b"{%d}\r\n" % len(raw) + raw)


def encode_mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name's octets: modified UTF-7 (RFC 3501 5.1.3) or UTF-8 (RFC 9051 5.1)."""
    return name.encode("utf-8") if utf8 else mutf7.encode(name).encode("ascii")


def _mailbox(out: _Out, name: str, utf8: bool) -> None:
    raw = encode_mailbox(name, utf8)
    if raw and all(c in ASTRING_CHARS for c in raw) and raw.upper() != b"NIL":
        out.write(raw)
    else:
        _string(out, raw, utf8)


def format_date_time(value: datetime) -> str:
    """date-time without quotes: "dd-Mon-yyyy hh:mm:ss +zzzz" (RFC 3501 9); naive means UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    offset = aware.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    month = MONTHS[aware.month - 1].capitalize()
    return (f"{aware.day:02d}-{month}-{aware.year:04d} {aware.hour:02d}:{aware.minute:02d}:"
            f"{aware.second:02d} {sign}{hours:02d}{mins:02d}")
