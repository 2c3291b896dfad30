"""The neutral form in which the message layer hands IMAP structures to the IMAP session.

`ImapValue` is one of:

* ``None``  -> NIL
* ``int``   -> a number
* ``bytes`` -> a string, the raw octets as they stand in the message (8-bit and RFC 2047
  encoded-words untouched); the session chooses quoted string or literal
* ``tuple`` -> a parenthesised list, items separated by one SP: "(a b c)"
* ``list``  -> its items written back to back, with no separator and no parentheses of their
  own. The IMAP grammar needs this twice: the bodies of a multipart, ``1*body SP
  media-subtype`` (RFC 3501 9, body-type-mpart), and the addresses of an envelope field,
  ``"(" 1*address ")"`` (env-from and friends), where no SP separates the items.

`render` is the reference writer of this form; the tests compare its output with what Dovecot
sends, and the session may use it or translate the values into its own wire types.
"""

from __future__ import annotations

from typing import TypeAlias

ImapValue: TypeAlias = int | bytes | tuple["ImapValue", ...] | list["ImapValue"] | None

# Longer strings are sent as literals, as Dovecot does past a few kilobytes; RFC 3501 sets no
# limit on quoted strings, but a literal needs no escaping and no scan for CR/LF.
MAX_QUOTED = 4096


def render(value: ImapValue, *, utf8: bool = False) -> bytes:
    """The wire form of `value`. Strings are quoted when they can be (RFC 3501 4.3: no CR, LF or
    NUL, 7-bit unless `utf8` allows UTF-8 as in RFC 9051 4.3), otherwise literals."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans are not IMAP values")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, bytes):
        return _string(value, utf8)
    if isinstance(value, list):
        return b"".join(render(item, utf8=utf8) for item in value)
    return b"(" + b" ".join(render(item, utf8=utf8) for item in value) + b")"


def _string(raw: bytes, utf8: bool) -> bytes:
    quotable = len(raw) <= MAX_QUOTED and not any(c in raw for c in b"\r\n\x00")
    if quotable and not raw.isascii():
        quotable = utf8 and _is_utf8(raw)
    if quotable:
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


__all__ = ["MAX_QUOTED", "ImapValue", "render"]
