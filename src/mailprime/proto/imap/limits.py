"""Input limits of the IMAP server core, each with the RFC section that sets or allows it."""

from __future__ import annotations

from dataclasses import dataclass

# RFC 7888 5 (LITERAL-): non-synchronizing literals of at most 4096 octets.
LITERAL_MINUS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    # RFC 7162 4 (and RFC 2683 3.2.1.5): servers should accept command lines of at least 8192
    # octets, literals excluded. A longer line is refused (BAD) and skipped without buffering.
    max_line: int = 8192
    # RFC 3501 7.5 / RFC 9051 7.5 let a server refuse a literal it will not take; non-APPEND
    # literals (passwords, search strings, names) are buffered, so they get a small bound.
    max_literal: int = 64 * 1024
    # RFC 7889 (APPENDLIMIT) / RFC 9051 7.1 [TOOBIG]: the largest message APPEND takes.
    max_append: int = 50 * 1024 * 1024
    # RFC 3501 9 leaves list nesting open; search keys and BODYSTRUCTURE-like input need a bound.
    max_nesting: int = 32
    # RFC 9051 7.1.5 lets a server close a connection that keeps sending garbage (BYE).
    max_bad_commands: int = 20
    # RFC 4954 4 (SASL): a response line may be up to 12288 octets; RFC 4959 (SASL-IR) likewise.
    max_sasl_line: int = 12288
    # RFC 7888 3 (LITERAL+) when True; False is LITERAL- (RFC 7888 5, required by IMAP4rev2,
    # RFC 9051 7.2.2): non-synchronizing literals over 4096 octets are refused.
    literal_plus: bool = True
    # RFC 3501 9 sets no count; each literal costs a round trip and a re-parse, so bound them.
    max_literals: int = 64
    # AppendData chunks are at most this many octets (bounded memory while an APPEND streams).
    append_chunk: int = 64 * 1024
