"""DKIM verification of a message that streams past (RFC 6376 6.1): the body is hashed as it
arrives, so a message spooled to disk is verified without ever being held in memory whole.

Theory of operation. `StreamedMessage` is fed the message in pieces, exactly as the SMTP
session receives them. Bare LFs become CRLF first (as `dkim_verify.normalize_line_ends` does
for a message in memory). It keeps the header section (up to a limit); when the empty line that
ends it arrives, it reads the DKIM-Signature fields (the first MAX_SIGNATURES, as
`verify_dkim` does) and starts one body hasher per distinct (body canonicalization, l=) pair
they ask for; every later piece goes to those hashers only. Relaxed without l= (nearly every
signature) uses dkim_canon's `RelaxedBodyHasher`; simple, and anything with l=, its general
form `CanonicalBodyHasher`, which also counts the canonical octets and hashes only the first l=.

`verify_streamed` then hands the header fields and the digests to `dkim_verify.verify_fields`,
the one signature check that `verify_dkim` also uses for a body in memory: only the way the
body is hashed differs. tests/message/test_dkim_stream.py checks both agree on every message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from mailprime.message.dkim_canon import (
    DEFAULT_HEADER_LIMIT,
    CanonicalBodyHasher,
    HeaderSplitter,
    RelaxedBodyHasher,
    split_fields,
)
from mailprime.message.dkim_verify import (
    BodyDigest,
    DkimVerdict,
    HashKey,
    body_keys,
    verify_fields,
)
from mailprime.message.resolver import Resolver

_WSP = b" \t"
_FWS = re.compile(r"[ \t\r\n]+")
_B_TAG = re.compile(rb"(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*", re.IGNORECASE)
_BARE_LF = re.compile(rb"(?<!\r)\n")

class StreamedMessage:
    """A message fed in pieces: its header section kept, its body hashed for each signature."""

    __slots__ = ("_cr", "_fast", "_fields", "_hashers", "_idle", "_in_body", "_split")

    def __init__(self, header_limit: int = DEFAULT_HEADER_LIMIT) -> None:
        self._split = HeaderSplitter(header_limit)
        self._in_body = False
        self._cr = False  # the last piece ended in CR (a CRLF may straddle two pieces)
        self._hashers: dict[HashKey, CanonicalBodyHasher] = {}
        self._fast: RelaxedBodyHasher | None = None  # relaxed, no l=
        self._fields: list[tuple[bytes, bytes]] = []
        self._idle = False  # in the body with nothing to hash: pieces are ignored

    def update(self, data: bytes) -> None:
        if not data or self._idle:
            return
        data = self._normalize(data)
        if self._in_body:
            self._hash(data)
            return
        rest = self._split.feed(data)
        if rest is None:
            return
        self._in_body = True
        self._start_hashers()
        if rest:
            self._hash(rest)

    def _normalize(self, data: bytes) -> bytes:
        joined = self._cr and data[:1] == b"\n"  # completes a CR the last piece ended with
        lfs = data.count(b"\n")
        if lfs and lfs != data.count(b"\r\n") + joined:  # two C-level counts: the usual case
            data = b"\n" + _BARE_LF.sub(b"\r\n", data[1:]) if joined else _BARE_LF.sub(b"\r\n", data)
        self._cr = data.endswith(b"\r")
        return data

    def _start_hashers(self) -> None:
        self._fields = split_fields(self._split.header_section or b"")
        for key in body_keys(self._fields):
            if key == ("relaxed", None):
                self._fast = RelaxedBodyHasher()
            else:
                self._hashers[key] = CanonicalBodyHasher(key[0] == "relaxed", key[1])
        self._idle = self._fast is None and not self._hashers

    def _hash(self, data: bytes) -> None:
        if self._fast is not None:
            self._fast.update(data)
        for hasher in self._hashers.values():
            hasher.update(data)

    @property
    def fields(self) -> list[tuple[bytes, bytes]] | None:
        """The header section split into (name, raw value) fields (dkim_canon.split_fields),
        available once the header section has ended; None when it outgrew the limit."""
        return None if self._split.overflow else self._fields

    @property
    def header_section(self) -> bytes | None:
        """The header section with its CRLFs, without the empty line; None when it outgrew the
        limit. A message with no empty line at all is all header and has an empty body."""
        return self._split.header_section

    def finish(self) -> dict[HashKey, BodyDigest]:
        """The body digests; call once, after the last piece."""
        if not self._in_body and not self._split.overflow:
            self._in_body = True  # no empty line: all header, empty body (RFC 5322 2.1)
            self._start_hashers()
        digests = {key: BodyDigest(*hasher.finish()) for key, hasher in self._hashers.items()}
        if self._fast is not None:
            digests["relaxed", None] = BodyDigest(self._fast.digest(), -1)
        return digests


async def verify_streamed(header_section: bytes, digests: Mapping[HashKey, BodyDigest],
                          resolver: Resolver, now: int, *,
                          fields: Sequence[tuple[bytes, bytes]] | None = None) -> tuple[DkimVerdict, ...]:
    """`dkim_verify.verify_dkim`'s verdicts for a message given as its header section (or its
    `fields`, split already) and the body digests `StreamedMessage` computed."""
    return await verify_fields(split_fields(header_section) if fields is None else fields,
                               digests, resolver, now)


__all__ = ["BodyDigest", "HashKey", "StreamedMessage", "verify_streamed"]
