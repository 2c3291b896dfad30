"""Responses to bytes (RFC 3501 7 and 9, RFC 9051 7 and 9).

`serialize` returns wire segments: bytes and `StreamedLiteral`s, each after its "{size}\\r\\n"
header, whose octets the driver copies from the source itself. Consecutive octets are merged
into one segment, except the octets of a literal of `_OWN_SEGMENT` octets or more (a message
body, a header section), which are passed on as the bytes object given, never copied here.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

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
# Literal octets from this size on are handed over as their own segment rather than copied
# (our choice: below it, a copy costs less than one more segment).
_OWN_SEGMENT = 1024


class _Out:
    """Collects segments: octets go into `buf` (one bytearray for the whole response), which a
    streamed literal cuts into a segment of its own."""

    __slots__ = ("buf", "segments")

    def __init__(self) -> None:
        self.segments: list[WireSegment] = []
        self.buf = bytearray()

    def stream(self, literal: StreamedLiteral) -> None:
        buf = self.buf
        if literal.binary:
            buf += b"~"
        buf += b"{%d}\r\n" % literal.size
        self.segments.append(bytes(buf))
        buf.clear()
        self.segments.append(literal)

    def octets(self, data: bytes) -> None:
        """A literal's octets: copied into `buf` when short, else a segment of their own, so a
        message body goes to the driver as the very bytes object it came in."""
        if len(data) < _OWN_SEGMENT:
            self.buf += data
            return
        if self.buf:
            self.segments.append(bytes(self.buf))
            self.buf.clear()
        self.segments.append(data)

    def done(self) -> list[WireSegment]:
        if self.buf:
            self.segments.append(bytes(self.buf))
        return self.segments


def serialize(response: Response, *, utf8: bool = False) -> list[WireSegment]:
    """The wire form of one response. `utf8`: RFC 9051 / RFC 6855 UTF-8 mode is on."""
    out = _Out()
    buf = out.buf
    if isinstance(response, Untagged):  # first: FETCH data makes most of the traffic
        if not response.values:
            raise LocalProtocolError("an untagged response needs at least one value")
        buf += b"*"
        for value in response.values:
            buf += b" "
            if isinstance(value, Atom):  # "EXISTS", "FETCH"...: no call for the common case
                raw = _raw_cache.get(value.text)
                buf += raw if raw is not None else _raw(value.text)
            elif isinstance(value, ParenList):
                _paren_list(out, value, utf8)
            else:
                _value(out, value, utf8)
    elif isinstance(response, Tagged):
        buf += response.tag.encode("ascii") + b" " + response.status.value.encode("ascii")
        _resp_text(out, response.code, response.text, utf8)
    elif isinstance(response, UntaggedStatus):
        buf += b"* " + response.status.value.encode("ascii")
        _resp_text(out, response.code, response.text, utf8)
    elif isinstance(response, Continuation):
        buf += b"+ "
        if response.data is not None:
            buf += binascii.b2a_base64(response.data, newline=False)
        else:
            buf += _text(response.text, utf8)
    else:  # pragma: no cover - exhaustive over Response
        raise LocalProtocolError(f"not a response: {response!r}")
    buf += b"\r\n"
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
    buf = out.buf
    if code is not None:
        buf += b" [" + code.name.encode("ascii")
        for arg in code.args:
            buf += b" "
            if isinstance(arg, (Literal, StreamedLiteral)):
                raise LocalProtocolError("a response code cannot hold a literal")
            _value(out, arg, utf8)
        buf += b"]"
    if text:
        buf += b" " + _text(text, utf8)


# Values are written by a table keyed by their exact type: a FETCH of a thousand messages writes
# tens of thousands of values, and one dict look-up beats a chain of isinstance tests. A subclass
# (none is made in this code base) takes the slower path through `_value_by_isinstance`.


def _value(out: _Out, value: Value, utf8: bool) -> None:
    kind = type(value)
    if kind is int:
        number = cast(int, value)
        if number < 0:
            raise LocalProtocolError("IMAP numbers are unsigned")
        out.buf += b"%d" % number
        return
    writer = _WRITERS.get(kind)
    if writer is None:
        _value_by_isinstance(out, value, utf8)
    else:
        writer(out, value, utf8)


def _value_by_isinstance(out: _Out, value: Value, utf8: bool) -> None:
    if isinstance(value, bool):
        raise LocalProtocolError("booleans are not IMAP values")
    if isinstance(value, int):
        if value < 0:
            raise LocalProtocolError("IMAP numbers are unsigned")
        out.buf += b"%d" % value
        return
    for kind, writer in _WRITERS.items():
        if isinstance(value, kind):
            writer(out, value, utf8)
            return
    raise LocalProtocolError(f"not an IMAP value: {value!r}")


def _atom(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, Atom)
    out.buf += _raw(value.text)


def _flag(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, Flag)
    out.buf += _raw(value.name)


def _nil(out: _Out, value: Value, utf8: bool) -> None:
    out.buf += b"NIL"


def _string_value(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, String)
    raw = value.value.encode("utf-8") if isinstance(value.value, str) else value.value
    _string(out, raw, utf8)


def _literal(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, Literal)
    out.buf += (b"~{%d}\r\n" if value.binary else b"{%d}\r\n") % len(value.data)
    out.octets(value.data)


def _streamed(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, StreamedLiteral)
    out.stream(value)


def _paren_list(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, ParenList)
    buf = out.buf  # the same bytearray all along: a streamed literal clears it, never replaces it
    buf += b"("
    first = True
    for item in value.items:
        if first:
            first = False
        else:
            buf += b" "
        # The items of FETCH data, written here rather than through `_value`: the same octets,
        # without a call per item.
        if isinstance(item, Atom):
            raw = _raw_cache.get(item.text)
            buf += raw if raw is not None else _raw(item.text)
        elif type(item) is int and item >= 0:
            buf += b"%d" % item
        elif isinstance(item, Literal) and not item.binary:
            buf += b"{%d}\r\n" % len(item.data)
            out.octets(item.data)
        elif isinstance(item, Flag):
            raw = _raw_cache.get(item.name)
            buf += raw if raw is not None else _raw(item.name)
        elif isinstance(item, ParenList):
            _paren_list(out, item, utf8)
        else:
            _value(out, item, utf8)
    buf += b")"


def _juxtaposed(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, Juxtaposed)
    if not value.items:  # RFC 3501 9: 1*body, 1*address
        raise LocalProtocolError("a back-to-back list needs at least one item")
    for item in value.items:
        if not isinstance(item, ParenList):  # two atoms back to back would read as one
            raise LocalProtocolError(f"only parenthesised lists stand back to back, not {item!r}")
        _paren_list(out, item, utf8)


def _mailbox_value(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, MailboxName)
    _mailbox(out, value.name, utf8)


def _date_time(out: _Out, value: Value, utf8: bool) -> None:
    assert isinstance(value, DateTime)
    out.buf += b'"' + format_date_time(value.value).encode("ascii") + b'"'


_WRITERS: dict[type, Callable[[_Out, Value, bool], None]] = {
    Atom: _atom, ParenList: _paren_list, Literal: _literal, Flag: _flag, NilType: _nil,
    String: _string_value, StreamedLiteral: _streamed, Juxtaposed: _juxtaposed,
    MailboxName: _mailbox_value, DateTime: _date_time,
}

# Atoms and flags are a small vocabulary (keywords, FETCH item names, flag names) written over
# and over: their checked octets are remembered. Cleared when full, so that atoms made of data
# (sequence sets in COPYUID, say) cannot grow it without bound.
_RAW_CACHE_MAX = 4096
_raw_cache: dict[str, bytes] = {}


def _raw(text: str) -> bytes:
    """An atom's octets; a CR or LF in one would let data forge responses, so it is a bug."""
    cached = _raw_cache.get(text)
    if cached is not None:
        return cached
    if "\r" in text or "\n" in text or not text.isascii():
        raise LocalProtocolError(f"not an atom: {text!r}")
    raw = text.encode("ascii")
    if len(_raw_cache) >= _RAW_CACHE_MAX:
        _raw_cache.clear()
    _raw_cache[text] = raw
    return raw


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
        out.buf += b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    else:
        out.buf += b"{%d}\r\n" % len(raw) + raw


def encode_mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name's octets: modified UTF-7 (RFC 3501 5.1.3) or UTF-8 (RFC 9051 5.1)."""
    return name.encode("utf-8") if utf8 else mutf7.encode(name).encode("ascii")


def _mailbox(out: _Out, name: str, utf8: bool) -> None:
    raw = encode_mailbox(name, utf8)
    if raw and all(c in ASTRING_CHARS for c in raw) and raw.upper() != b"NIL":
        out.buf += raw
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
