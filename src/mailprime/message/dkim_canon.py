"""DKIM "relaxed" canonicalization (RFC 6376 3.4.2 header, 3.4.4 body) and the body hash.

Pure functions over bytes, plus two streaming hashers so that a message spooled to disk is
signed without ever being held in memory whole:

* `RelaxedBodyHasher` canonicalizes and hashes a body fed in pieces of any size.
* `MessageHasher` is fed a whole message (header section, empty line, body) in pieces: it keeps
  the header section (up to a limit) and hashes the body.

Theory of operation of `RelaxedBodyHasher`. Relaxed body canonicalization is line-local except
for one rule: empty lines at the end of the body are ignored (3.4.4 b). So the hasher cuts its
input after the last CRLF it has; the complete lines before it are canonicalized as one block
(bulk `bytes` operations, no per-octet loop) and the partial line after it is carried into the
next piece. Of each canonical block, the trailing CRLFs are held back as a count: they are
hashed only when more content follows, so the empty lines at the very end never are. At the end
the carried partial line is completed with a CRLF (3.4.4: a non-empty body that does not end in
CRLF gets one; our SMTP client sends it so), and the last content line gets its own CRLF back.
An empty body, or one of empty lines only, hashes as the empty string (RFC 6376 3.4.4; errata
1384 settled that relaxed, unlike simple, adds no CRLF to it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

CRLF = b"\r\n"
_WSP = b" \t"

# A partial line longer than this is hashed up to its trailing WSP (and a final CR) instead of
# being carried whole into the next piece: memory and copying stay bounded whatever the line
# length (BDAT and injected content have no line length limit; RFC 5321 4.5.3.1.6 is DATA's).
MAX_CARRY = 16 * 1024

# How much header section a `MessageHasher` keeps: as message.headers.MAX_HEADER_SECTION
# (Postfix's header_size_limit; RFC 5322 sets none). A longer one is not signed.
DEFAULT_HEADER_LIMIT = 102_400


# Headers (RFC 6376 3.4.2) -------------------------------------------------------------------

def _compress_wsp(value: bytes) -> bytes:
    """Every run of SP/HTAB becomes one SP (RFC 6376 3.4.2 and 3.4.4 "WSP" = SP / HTAB)."""
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:  # each pass halves every run: log2 of the longest run passes
        value = value.replace(b"  ", b" ")
    return value


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """One header field in relaxed form: "name:value" CRLF, with the name lower-cased, the value
    unfolded, its WSP runs made one SP and WSP removed at both ends and around the colon."""
    unfolded = value.replace(CRLF, b"")
    return name.strip(_WSP).lower() + b":" + _compress_wsp(unfolded).strip(_WSP) + CRLF


def split_fields(section: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a header section as (name, raw value): the value is everything after
    the colon, continuation lines included with their CRLFs, without the final CRLF. A line that
    is neither a field nor a continuation (no colon) is skipped, as verifiers do."""
    fields: list[tuple[bytes, bytes]] = []
    name = b""
    parts: list[bytes] = []
    for line in section.split(CRLF):
        if line[:1] in (b" ", b"\t"):
            if parts:
                parts.append(line)
            continue
        if parts:
            fields.append((name, CRLF.join(parts)))
            parts = []
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon]
        parts = [line[colon + 1:]]
    if parts:
        fields.append((name, CRLF.join(parts)))
    return fields


# Body (RFC 6376 3.4.4) ----------------------------------------------------------------------

def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header section with its CRLFs, body) of a message in memory (RFC 5322 2.1)."""
    if message.startswith(CRLF):
        return b"", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[:end + 2], message[end + 4:]


def relax_lines(block: bytes) -> bytes:
    """Relaxed canonical form of complete lines (each ending in CRLF): WSP runs become one SP and
    WSP at the end of a line goes. Empty lines at the end are kept (the caller drops them)."""
    if b" " not in block and b"\t" not in block:
        return block  # base64 parts: nothing to do, found at memchr speed
    block = _compress_wsp(block)
    if b" \r\n" in block:  # after compression at most one SP precedes a CRLF
        block = block.replace(b" \r\n", CRLF)
    return block


def relaxed_body(body: bytes) -> bytes:
    """The whole relaxed canonical body (for tests and small messages; `RelaxedBodyHasher`
    hashes the same octets without building them)."""
    if body and not body.endswith(CRLF):
        body += CRLF
    canon = relax_lines(body)
    end = len(canon)
    while canon.endswith(CRLF, 0, end):
        end -= 2
    return canon[:end] + CRLF if end else b""


class RelaxedBodyHasher:
    """SHA-256 of the relaxed canonical body, fed in pieces (see the module's theory)."""

    __slots__ = ("_carry", "_hash", "_max_carry", "_pending", "_started")

    def __init__(self, max_carry: int = MAX_CARRY) -> None:
        self._max_carry = max_carry
        self._hash = hashlib.sha256()
        self._carry = b""  # the partial line after the last CRLF seen
        self._pending = 0  # CRLFs held back: hashed only if content follows
        self._started = False  # some content line was hashed

    def update(self, data: bytes) -> None:
        if self._carry:
            data = self._carry + data
        cut = data.rfind(CRLF)
        if cut >= 0:
            cut += 2
            self._hash_lines(relax_lines(data[:cut] if cut < len(data) else data))
            data = data[cut:]
        self._carry = data if len(data) <= self._max_carry else self._hash_partial(data)

    def _hash_partial(self, data: bytes) -> bytes:
        """Hashes a long partial line but for its trailing WSP (which a CRLF may yet make
        trailing, or more WSP may extend) and a final CR (which may start the CRLF); returns
        what to carry: that WSP run shortened to the one SP it canonicalizes to, and the CR."""
        cr = data.endswith(b"\r")
        body = data[:-1] if cr else data
        content = body.rstrip(_WSP)
        if content:
            self._hash_lines(relax_lines(content))
        return (b" " if len(content) < len(body) else b"") + (b"\r" if cr else b"")

    def _hash_lines(self, canon: bytes) -> None:
        end = len(canon)
        while canon.endswith(CRLF, 0, end):
            end -= 2
        trailing = (len(canon) - end) // 2
        if not end:
            self._pending += trailing
            return
        if self._pending:
            self._hash.update(CRLF * self._pending)
        self._hash.update(memoryview(canon)[:end] if end < len(canon) else canon)
        self._pending = trailing
        self._started = True

    def digest(self) -> bytes:
        """The body hash (bh=); the hasher is finished afterwards."""
        if self._carry:
            self._hash_lines(relax_lines(self._carry + CRLF))
            self._carry = b""
        if self._started:
            self._hash.update(CRLF)  # the last content line's own CRLF, held back with the rest
            self._started = False
        self._pending = 0
        return self._hash.digest()


def body_hash(body: bytes | Iterable[bytes]) -> bytes:
    """SHA-256 of the relaxed canonical body given whole or in pieces."""
    hasher = RelaxedBodyHasher()
    for piece in ((body,) if isinstance(body, bytes) else body):
        hasher.update(piece)
    return hasher.digest()


class MessageHasher:
    """Fed a whole message in pieces: keeps its header section and hashes its body.

    The header section ends at the first empty line (RFC 5322 2.1); a message that starts with
    CRLF has an empty one, a message without an empty line is all header and has an empty body.
    `header_section` is None when the header section outgrew `header_limit` (such a message is
    not signed: the fields it would cover are not all known)."""

    __slots__ = ("_body", "_head", "_in_body", "_limit", "_overflow")

    def __init__(self, header_limit: int = DEFAULT_HEADER_LIMIT) -> None:
        self._limit = header_limit
        self._head = bytearray()
        self._in_body = False
        self._overflow = False
        self._body = RelaxedBodyHasher()

    def update(self, data: bytes) -> None:
        if self._in_body:
            self._body.update(data)
            return
        if self._overflow:
            return
        start = max(0, len(self._head) - 3)  # an end marker may straddle two pieces
        self._head += data
        if self._head[:2] == CRLF:
            end = 0
        else:
            found = self._head.find(b"\r\n\r\n", start)
            end = found + 2 if found >= 0 else -1
        if end < 0:
            if len(self._head) > self._limit:
                self._overflow = True
                self._head.clear()
            return
        rest = bytes(self._head[end + 2:])
        del self._head[end:]
        if len(self._head) > self._limit:
            self._overflow = True
            self._head.clear()
            return
        self._in_body = True
        if rest:
            self._body.update(rest)

    @property
    def header_section(self) -> bytes | None:
        """The header section with its CRLFs, without the empty line; None if too long."""
        return None if self._overflow else bytes(self._head)

    def body_hash(self) -> bytes:
        return self._body.digest()


__all__ = [
    "DEFAULT_HEADER_LIMIT",
    "MAX_CARRY",
    "MessageHasher",
    "RelaxedBodyHasher",
    "body_hash",
    "relax_lines",
    "relaxed_body",
    "relaxed_header",
    "split_fields",
    "split_message",
]
