"""DKIM "relaxed" canonicalization (RFC 6376 3.4.2 header, 3.4.4 body) and the body hash.

Pure functions over bytes, plus two streaming hashers so that a message spooled to disk is
signed without ever being held in memory whole (a message in memory takes `body_hash`'s whole-
body path; tests/message/test_dkim_fast_paths.py holds both to the same octets):

* `RelaxedBodyHasher` canonicalizes and hashes a body fed in pieces of any size.
* `MessageHasher` is fed a whole message (header section, empty line, body) in pieces: it keeps
  the header section (up to a limit) and hashes the body.

Theory of operation of `RelaxedBodyHasher`. Relaxed body canonicalization is line-local except
for one rule: empty lines at the end of the body are ignored (3.4.4 b). So the hasher cuts its
input after the last CRLF it has; the complete lines before it are canonicalized as one block
(`relax_lines`: a few C passes, no per-line or per-octet loop) and the partial line after it is
carried into the next piece. Of each canonical block, the trailing CRLFs are held back as a
count: they are hashed only when more content follows, so the empty lines at the very end never
are. At the end the carried partial line is completed with a CRLF (3.4.4: a non-empty body that
does not end in CRLF gets one; our SMTP client sends it so), and the last content line gets its
own CRLF back.
An empty body, or one of empty lines only, hashes as the empty string (RFC 6376 3.4.4; errata
1384 settled that relaxed, unlike simple, adds no CRLF to it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable

_relax_lines_c: Callable[[bytes], bytes] | None
try:  # the C helper (setup.py builds it; optional: without a compiler, the Python version)
    from mailprime.message._relaxed import relax_lines as _relax_lines_c
except ImportError:  # pragma: no cover - only where it could not be built
    _relax_lines_c = None

CRLF = b"\r\n"
_WSP = b" \t"
_FOLD_START = (b" ", b"\t")  # a line starting so continues the field above (RFC 5322 2.2.3)

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


def relaxed_value(value: bytes) -> bytes:
    """A header field's value in relaxed form: unfolded, its WSP runs made one SP, no WSP at
    either end (RFC 6376 3.4.2)."""
    if b"\r" in value or b"\n" in value:
        value = value.replace(CRLF, b"")
        if b"\r" in value or b"\n" in value:  # a bare CR or LF: content, not a fold
            return _compress_wsp(value).strip(_WSP)
    if b"\x0b" in value or b"\x0c" in value:  # whitespace to split(), content to DKIM
        return _compress_wsp(value).strip(_WSP)
    # Only SP and HTAB are left of split()'s whitespace: its tokens joined by one SP are the
    # compressed value without WSP at either end, in one C call.
    return b" ".join(value.split())


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """One header field in relaxed form: "name:value" CRLF, with the name lower-cased, the value
    unfolded, its WSP runs made one SP and WSP removed at both ends and around the colon."""
    return name.strip(_WSP).lower() + b":" + relaxed_value(value) + CRLF


def split_fields(section: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a header section as (name, raw value): the value is everything after
    the colon, continuation lines included with their CRLFs, without the final CRLF. A line that
    is neither a field nor a continuation (no colon) is skipped, as verifiers do."""
    fields: list[tuple[bytes, bytes]] = []
    name = b""
    parts: list[bytes] | None = None  # the lines of the field being read (None: no field)
    for line in section.split(CRLF):
        if line.startswith(_FOLD_START):
            if parts is not None:
                parts.append(line)
            continue
        if parts is not None:
            fields.append((name, CRLF.join(parts)))  # one part: join returns it, no copy
            parts = None
        name, colon, value = line.partition(b":")
        if colon and name:
            parts = [value]
    if parts is not None:
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


# A run of two or more SP (HTAB already made SP). A compiled pattern with a literal prefix: sre
# scans for "  " in C and the substitution is one C call whatever the number of runs. Measured
# on 10 KB bodies against a swap-split-join of the whole body (bytes.split() cuts at whitespace
# runs in C, but builds an object per word) and the replace("  ", " ") passes this module used
# before: 44 µs against 58 and 87 on the bench's indented HTML, 41 against 77 on prose.
_SP_RUN = re.compile(rb"  +")


def relax_lines_py(block: bytes) -> bytes:
    """Relaxed canonical form of complete lines (each ending in CRLF): WSP runs become one SP and
    WSP at the end of a line goes. Empty lines at the end are kept (the caller drops them).
    `relax_lines` is the C helper (message/_relaxed.c: one pass, ~5x faster on the bench's
    body) when it is built, else this.

    The cost is a few C passes over the block, never a per-line or per-octet loop (a 10 KB body
    is signed hundreds of times a second per core): no WSP at all (base64 parts) is found at
    memchr speed; a block already canonical but for SP before CRLF (plain text) costs two
    scans; otherwise HTAB becomes SP, each run of SP one SP (`_SP_RUN`), and SP CRLF becomes CRLF."""
    if b"\t" in block:
        block = block.replace(b"\t", b" ")
    elif b" " not in block:
        return block
    if b"  " in block:
        block = _SP_RUN.sub(b" ", block)
    # With the runs made one SP, at most one SP precedes a CRLF. replace() returns the block
    # itself when it finds nothing: one scan either way.
    return block.replace(b" \r\n", CRLF)


relax_lines: Callable[[bytes], bytes] = _relax_lines_c or relax_lines_py


def _relax_whole(body: bytes) -> tuple[bytes, int]:
    """The relaxed lines of a whole body, and where its content ends: the relaxed body is
    lines[:end] + CRLF (the empty lines at the end dropped, 3.4.4 b), or nothing if end is 0."""
    if body and not body.endswith(CRLF):
        body += CRLF  # 3.4.4: a non-empty body gets a final CRLF
    canon = relax_lines(body)
    end = len(canon)
    while canon.endswith(CRLF, 0, end):
        end -= 2
    return canon, end


def relaxed_body(body: bytes) -> bytes:
    """The whole relaxed canonical body (for tests and small messages; `body_hash` hashes the
    same octets without copying them)."""
    canon, end = _relax_whole(body)
    return canon[:end] + CRLF if end else b""


class _Sink:
    """Counts the canonical octets and hashes the first `limit` of them (all when None)."""

    __slots__ = ("hash", "length", "limit")

    def __init__(self, limit: int | None) -> None:
        self.hash = hashlib.sha256()
        self.length = 0
        self.limit = limit

    def write(self, data: bytes | memoryview) -> None:
        if self.limit is None:
            self.hash.update(data)
        elif self.length < self.limit:
            self.hash.update(data[:self.limit - self.length])
        self.length += len(data)


class CanonicalBodyHasher:
    """SHA-256 of the simple (RFC 6376 3.4.3) or relaxed (3.4.4) canonical body fed in pieces
    (see the module's theory), of its first `limit` octets when l= was given, and its length.

    Complete lines are canonicalized as a block, the partial line after the last CRLF is carried
    (at most `max_carry` octets, then written up to its trailing WSP and a final CR), and the
    CRLFs at the end of what was written are held back as a count, written only when content
    follows: the empty lines at the end of a body never count."""

    __slots__ = ("_carry", "_max_carry", "_pending", "_relaxed", "_sink", "_started")

    def __init__(self, relaxed: bool = True, limit: int | None = None,
                 max_carry: int = MAX_CARRY) -> None:
        self._relaxed = relaxed
        self._sink = _Sink(limit)
        self._max_carry = max_carry
        self._carry = b""  # the partial line after the last CRLF seen
        self._pending = 0  # CRLFs held back: hashed only if content follows
        self._started = False  # some content line was hashed

    def update(self, data: bytes) -> None:
        if self._carry:
            data = self._carry + data
        cut = data.rfind(CRLF)
        if cut >= 0:
            cut += 2
            block = data[:cut] if cut < len(data) else data
            self._write(relax_lines(block) if self._relaxed else block)
            data = data[cut:]
        self._carry = data if len(data) <= self._max_carry else self._write_partial(data)

    def _write_partial(self, data: bytes) -> bytes:
        """Writes a long partial line but for (relaxed) its trailing WSP, which a CRLF may yet
        make trailing or more WSP extend, and a final CR, which may start the CRLF; returns what
        to carry: that WSP run shortened to the one SP it canonicalizes to, and the CR."""
        cr = data.endswith(b"\r")
        body = data[:-1] if cr else data
        if not self._relaxed:
            if body:
                self._write(body)
            return b"\r" if cr else b""
        content = body.rstrip(_WSP)
        if content:
            self._write(relax_lines(content))
        return (b" " if len(content) < len(body) else b"") + (b"\r" if cr else b"")

    def _write(self, canon: bytes) -> None:
        end = len(canon)
        while canon.endswith(CRLF, 0, end):
            end -= 2
        trailing = (len(canon) - end) // 2
        if not end:
            self._pending += trailing
            return
        if self._pending:
            self._sink.write(CRLF * self._pending)
        self._sink.write(memoryview(canon)[:end] if end < len(canon) else canon)
        self._pending = trailing
        self._started = True

    def finish(self) -> tuple[bytes, int]:
        """(digest, canonical length); the hasher is finished afterwards."""
        if self._carry:
            last = self._carry + CRLF
            self._write(relax_lines(last) if self._relaxed else last)
            self._carry = b""
        if self._started or not self._relaxed:
            # The last content line's own CRLF; a simple body of empty lines only is one CRLF.
            self._sink.write(CRLF)
            self._started = False
        self._pending = 0
        return self._sink.hash.digest(), self._sink.length


class RelaxedBodyHasher(CanonicalBodyHasher):
    """The relaxed body hash without l= (what we sign with, and nearly every signature uses)."""

    __slots__ = ()

    def __init__(self, max_carry: int = MAX_CARRY) -> None:
        super().__init__(relaxed=True, limit=None, max_carry=max_carry)

    def digest(self) -> bytes:
        """The body hash (bh=); the hasher is finished afterwards."""
        return self.finish()[0]


def body_hash(body: bytes | Iterable[bytes]) -> bytes:
    """SHA-256 of the relaxed canonical body given whole or in pieces. A whole body (a message
    signed in memory) skips the streaming bookkeeping: canonicalized in one go and hashed
    without a copy; the tests hold both ways to the same octets."""
    if isinstance(body, bytes):
        canon, end = _relax_whole(body)
        if end and end == len(canon) - 2:  # the usual case: one CRLF after the last line
            return hashlib.sha256(canon).digest()
        whole = hashlib.sha256(memoryview(canon)[:end])
        if end:
            whole.update(CRLF)
        return whole.digest()
    hasher = RelaxedBodyHasher()
    for piece in body:
        hasher.update(piece)
    return hasher.digest()


class HeaderSplitter:
    """The header section of a message fed in pieces, up to `limit` octets.

    The header section ends at the first empty line (RFC 5322 2.1); a message that starts with
    CRLF has an empty one. `feed` keeps pieces until that line has arrived, then returns the
    octets after it (the start of the body; b"" if none yet) — once: the caller handles the body
    from then on. A header section longer than `limit` is dropped (`overflow`), and `feed` then
    returns None for ever."""

    __slots__ = ("_head", "_limit", "overflow")

    def __init__(self, limit: int = DEFAULT_HEADER_LIMIT) -> None:
        self._limit = limit
        self._head = bytearray()
        self.overflow = False

    def feed(self, data: bytes) -> bytes | None:
        if self.overflow:
            return None
        start = max(0, len(self._head) - 3)  # an end marker may straddle two pieces
        self._head += data
        if self._head[:2] == CRLF:
            end = 0
        else:
            found = self._head.find(b"\r\n\r\n", start)
            end = found + 2 if found >= 0 else -1
        if end < 0:
            if len(self._head) > self._limit:
                self.overflow = True
                self._head.clear()
            return None
        rest = bytes(self._head[end + 2:])
        del self._head[end:]
        if len(self._head) > self._limit:
            self.overflow = True
            self._head.clear()
            return None
        return rest

    @property
    def header_section(self) -> bytes | None:
        """The header section with its CRLFs, without the empty line; None if too long."""
        return None if self.overflow else bytes(self._head)


class MessageHasher:
    """Fed a whole message in pieces: keeps its header section (`HeaderSplitter`) and hashes its
    body. A message without an empty line is all header and has an empty body.
    `header_section` is None when the header section outgrew `header_limit` (such a message is
    not signed: the fields it would cover are not all known)."""

    __slots__ = ("_body", "_in_body", "_split")

    def __init__(self, header_limit: int = DEFAULT_HEADER_LIMIT) -> None:
        self._split = HeaderSplitter(header_limit)
        self._in_body = False
        self._body = RelaxedBodyHasher()

    def update(self, data: bytes) -> None:
        if self._in_body:
            self._body.update(data)
            return
        rest = self._split.feed(data)
        if rest is None:
            return
        self._in_body = True
        if rest:
            self._body.update(rest)

    @property
    def header_section(self) -> bytes | None:
        """The header section with its CRLFs, without the empty line; None if too long."""
        return self._split.header_section

    def body_hash(self) -> bytes:
        return self._body.digest()


__all__ = [
    "DEFAULT_HEADER_LIMIT",
    "MAX_CARRY",
    "CanonicalBodyHasher",
    "HeaderSplitter",
    "MessageHasher",
    "RelaxedBodyHasher",
    "body_hash",
    "relax_lines",
    "relaxed_body",
    "relaxed_header",
    "relaxed_value",
    "split_fields",
    "split_message",
]
