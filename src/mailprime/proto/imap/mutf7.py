"""Modified UTF-7 for IMAP mailbox names (RFC 3501 5.1.3, kept by RFC 9051 5.1 for IMAP4rev1 clients).

Printable US-ASCII (0x20-0x7e) stands for itself except "&", written "&-"; any other run of
characters is UTF-16BE in base64 with "," for "/" and no padding, between "&" and "-".
"""

from __future__ import annotations

import binascii

_B64_MODIFIED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


class MUtf7Error(ValueError):
    """The bytes are not a valid modified UTF-7 mailbox name."""


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def _encode_run(run: str) -> str:
    raw = run.encode("utf-16-be", "surrogatepass")
    b64 = binascii.b2a_base64(raw, newline=False).rstrip(b"=").replace(b"/", b",")
    return "&" + b64.decode("ascii") + "-"


def encode(name: str) -> str:
    """`name` in modified UTF-7 (pure ASCII, printable)."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _is_direct(ch):
            if run:
                out.append(_encode_run("".join(run)))
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


def _decode_run(b64: str) -> str:
    if not b64:
        return "&"
    if not all(ord(c) in _B64_MODIFIED for c in b64):
        raise MUtf7Error(f"invalid base64 in &{b64}-")
    if len(b64) % 4 == 1:
        raise MUtf7Error(f"truncated base64 in &{b64}-")
    data = b64.replace(",", "/").encode("ascii")
    padded = data + b"=" * (-len(data) % 4)
    raw = binascii.a2b_base64(padded, strict_mode=True)
    # The unused low bits of the last sextet must be zero, or another encoder would differ.
    if binascii.b2a_base64(raw, newline=False).rstrip(b"=") != data:
        raise MUtf7Error(f"non-canonical base64 in &{b64}-")
    if len(raw) % 2:
        raise MUtf7Error(f"odd UTF-16 length in &{b64}-")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUtf7Error(f"invalid UTF-16 in &{b64}-") from exc
    if any(_is_direct(ch) for ch in text):
        # RFC 3501 5.1.3: printable US-ASCII must represent itself.
        raise MUtf7Error(f"printable ASCII encoded in &{b64}-")
    return text


def decode(wire: str) -> str:
    """The Unicode name for a modified UTF-7 name; `MUtf7Error` when it is not valid."""
    out: list[str] = []
    i = 0
    n = len(wire)
    while i < n:
        ch = wire[i]
        if not _is_direct(ch):
            raise MUtf7Error(f"character {ch!r} must be encoded")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = wire.find("-", i + 1)
        if end < 0:
            raise MUtf7Error("unterminated &-sequence")
        out.append(_decode_run(wire[i + 1:end]))
        i = end + 1
    return "".join(out)

