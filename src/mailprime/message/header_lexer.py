"""Header sections and structured header values, as octets with their offsets.

Two jobs that the IMAP structure code (mime_tree, imap_envelope, imap_fetch, imap_search) shares:

* `parse_fields` splits a header section (RFC 5322 2.2) into fields, each with the offsets of its
  raw bytes, folding and line ends included, so HEADER.FIELDS can hand them back untouched;
* `HeaderScanner` walks one unfolded structured value (RFC 5322 3.2: CFWS, atoms, quoted
  strings, domain literals; RFC 2045 5.1 tokens) for Content-Type parameters and addresses.

Nothing here raises on malformed input: an unterminated quoted string or comment runs to the end
of the value, a line without a colon is kept as a field with an empty name (which no name can
match). Octets above 127 (RFC 6532 UTF-8 headers, or plain 8-bit junk) are kept raw.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# RFC 5322 sets no limit on a (folded) field; the structured parsers read at most this much of
# one value so that a hostile 50 MB To: field costs a bounded amount of Python-level work.
MAX_STRUCTURED_VALUE = 256 * 1024

_WSP = b" \t"
# RFC 5322 3.2.3 atext, plus octets >= 128 (RFC 6532 3.2 extends atext with UTF-8).
_ATOM = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+")
# A phrase word may also hold '.' (RFC 5322 4.1 obs-phrase), as in "John Q. Public".
_PHRASE_ATOM = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\x80-\xff]+")
# A dot-atom as found in the wild: runs of atext and dots (RFC 5322 4.4 obs-local-part
# tolerates "a..b"; we tolerate leading and trailing dots too rather than lose the address).
_DOT_ATOM = _PHRASE_ATOM
# RFC 2045 5.1 token: any CHAR except SPACE, CTLs and tspecials ()<>@,;:\"/[]?=
_TOKEN = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~\x80-\xff]+")
# A parameter value that was not quoted: senders put '=', '/', '?', ':' in unquoted values
# (boundary=----=_Part_1, name=a/b.txt), so read up to the next separator instead of a token.
_LOOSE_VALUE = re.compile(rb"[^;\s\"()\x00-\x1f\x7f]+")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One field of a header section. `start`/`end` delimit its raw octets in the buffer that was
    parsed (name, colon, value, folding and the final line end); `value_start` is just after the
    colon. `name` is the field name as written (b"" for a line without a colon)."""

    name: bytes
    start: int
    value_start: int
    end: int

    def raw(self, data: bytes) -> bytes:
        return data[self.start:self.end]

    def value(self, data: bytes) -> bytes:
        """The unfolded value (RFC 5322 2.2.3: line breaks removed, the whitespace that followed
        them kept) without its leading whitespace. Trailing whitespace stays, as Dovecot keeps
        it: ENVELOPE and BODYSTRUCTURE strings are the field as written."""
        return unfold(data[self.value_start:self.end])

    def is_named(self, name: bytes) -> bool:
        return bool(self.name) and self.name.lower() == name.lower()


def unfold(value: bytes) -> bytes:
    """Removes every CR and LF (RFC 5322 2.2.3 unfolding) and the leading whitespace."""
    return _LINE_BREAK.sub(b"", value).lstrip(b" \t")


def parse_fields(data: bytes, start: int = 0, end: int | None = None) -> tuple[HeaderField, ...]:
    """The fields of the header section data[start:end] (which may include the empty line that
    ends it; parsing stops there). Lines starting with SP or HTAB continue the previous field; a
    continuation line before any field becomes a nameless field."""
    stop = len(data) if end is None else min(end, len(data))
    fields: list[HeaderField] = []
    pos = start
    field_start = -1
    name = b""
    value_start = 0
    while pos < stop:
        nl = data.find(b"\n", pos, stop)
        line_end = stop if nl < 0 else nl + 1
        first = data[pos]
        if first in (0x0D, 0x0A) and data[pos:line_end] in (b"\r\n", b"\n"):
            break  # the empty line that ends the header section
        if first not in (0x20, 0x09) or field_start < 0:
            if field_start >= 0:
                fields.append(HeaderField(name, field_start, value_start, pos))
            field_start = pos
            colon = data.find(b":", pos, line_end)
            candidate = data[pos:colon].rstrip(_WSP) if colon >= 0 else b""
            # RFC 5322 3.6.8 field-name: printable ASCII except ':'; obs-optional (RFC 5322 4.5)
            # allows whitespace before the colon, which rstrip removed.
            if colon >= 0 and candidate and all(33 <= c <= 126 for c in candidate):
                name, value_start = candidate, colon + 1
            else:
                name, value_start = b"", pos
        pos = line_end
    if field_start >= 0:
        fields.append(HeaderField(name, field_start, value_start, pos))
    return tuple(fields)


_BLANK_LINE = re.compile(rb"\n\r?\n")


def header_end(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Where the header section starting at `start` ends: just after the empty line that closes
    it (RFC 5322 2.1), or `end` when there is none (the entity is all header)."""
    stop = len(data) if end is None else min(end, len(data))
    if data.startswith(b"\r\n", start, stop):
        return start + 2
    if data.startswith(b"\n", start, stop):
        return start + 1
    blank = _BLANK_LINE.search(data, start, stop)
    return blank.end() if blank else stop


# After a field's first line, the next line that does not start with WSP starts something else.
_FIELD_END = re.compile(rb"\n(?![ \t])")


@functools.lru_cache(maxsize=64)
def _name_patterns(names: tuple[bytes, ...], prefix: bool) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """Patterns that find a field called one of `names` (or, with `prefix`, starting with one) at
    the start of the buffer, and after a line feed. Starting the second pattern with a literal
    lets the regex engine skip ahead fast, which keeps a header of millions of fields cheap."""
    rest = rb"[!-9;-~]*" if prefix else b""  # RFC 5322 3.6.8 ftext: printable ASCII but ':'
    body = rb"(?i:" + b"|".join(re.escape(name) for name in names) + rb")" + rest + rb"[ \t]*:"
    return re.compile(body), re.compile(rb"\n" + body)


def named_fields(data: bytes, names: Sequence[bytes], start: int = 0, end: int | None = None, *,
                 prefix: bool = False) -> list[HeaderField]:
    """The fields of the header section data[start:end] (`start` at the start of a line) whose
    name is one of `names`, or with `prefix` starts with one (case-insensitive), in order: what
    filtering `parse_fields` gives, without visiting every field."""
    # A name that parse_fields could never produce (empty, or with a colon, space or control)
    # must not match either.
    valid = tuple(name for name in names if _is_field_name(name))
    if not valid:
        return []
    stop = header_end(data, start, len(data) if end is None else min(end, len(data)))
    at_start, after_line_feed = _name_patterns(valid, prefix)
    found: list[HeaderField] = []
    first = at_start.match(data, start, stop)
    starts = [(start, first.end())] if first else []
    starts += ((m.start() + 1, m.end()) for m in after_line_feed.finditer(data, start, stop))
    for field_start, colon_end in starts:
        next_line = _FIELD_END.search(data, colon_end, stop)
        field_end = next_line.start() + 1 if next_line else stop
        name = data[field_start:colon_end - 1].rstrip(_WSP)
        found.append(HeaderField(name, field_start, colon_end, field_end))
    return found


# One whole field: a line that starts with a field name and a colon, and its continuation lines.
_FIELD_REST = rb"[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*"
_ANY_NAME = rb"[!-9;-~]+"


@functools.lru_cache(maxsize=64)
def _selection_pattern(names: tuple[bytes, ...], exclude: bool) -> re.Pattern[bytes]:
    listed = rb"(?i:" + b"|".join(re.escape(name) for name in names) + rb")"
    if not exclude:
        return re.compile(rb"(?m)^" + listed + _FIELD_REST)
    if not names:
        return re.compile(rb"(?m)^" + _ANY_NAME + _FIELD_REST)
    return re.compile(rb"(?m)^(?!" + listed + rb"[ \t]*:)" + _ANY_NAME + _FIELD_REST)


def select_fields(data: bytes, names: Sequence[bytes], start: int = 0, end: int | None = None, *,
                  exclude: bool = False) -> bytes:
    """The raw fields (folding and line ends kept, original order) of the header section
    data[start:end] whose name is in `names`, or with `exclude` is not, concatenated; lines that
    are not fields are left out. The same fields `parse_fields` finds, but joined by the regex
    engine, so a header of millions of fields is copied at C speed."""
    valid = tuple(sorted({name.lower() for name in names if _is_field_name(name)}))
    if not valid and not exclude:
        return b""
    stop = header_end(data, start, len(data) if end is None else min(end, len(data)))
    return b"".join(_selection_pattern(valid, exclude).findall(data, start, stop))


def _is_field_name(name: bytes) -> bool:
    """RFC 5322 3.6.8: printable ASCII except the colon."""
    return bool(name) and all(33 <= c <= 126 and c != 0x3A for c in name)


def first_value(data: bytes, fields: Sequence[HeaderField], name: bytes) -> bytes | None:
    """The unfolded value of the first field called `name` (case-insensitive), or None."""
    for field in fields:
        if field.is_named(name):
            return field.value(data)
    return None


def values(data: bytes, fields: Sequence[HeaderField], name: bytes) -> Iterator[bytes]:
    """The unfolded values of every field called `name`, in order."""
    for field in fields:
        if field.is_named(name):
            yield field.value(data)


class HeaderScanner:
    """A cursor over one unfolded structured value. Every method consumes what it recognises and
    returns it (or an empty/None result without moving); none raises. `last_comment` holds the
    text of the most recent comment skipped, for the "user@host (Real Name)" form."""

    __slots__ = ("data", "last_comment", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data[:MAX_STRUCTURED_VALUE]
        self.pos = 0
        self.last_comment: bytes | None = None

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        """The next octet, or -1 at the end."""
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def accept(self, char: bytes) -> bool:
        """Consumes `char` (one octet) if it is next."""
        if self.data.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def skip_cfws(self) -> None:
        """Skips whitespace, line breaks and (nested) comments (RFC 5322 3.2.2)."""
        data = self.data
        while self.pos < len(data):
            char = data[self.pos]
            if char in b" \t\r\n":
                self.pos += 1
            elif char == 0x28:  # '('
                self.last_comment = self._comment()
            else:
                return

    def _comment(self) -> bytes:
        data = self.data
        depth = 0
        out = bytearray()
        while self.pos < len(data):
            char = data[self.pos]
            self.pos += 1
            if char == 0x5C and self.pos < len(data):  # quoted-pair
                out.append(data[self.pos])
                self.pos += 1
                continue
            if char == 0x28:
                depth += 1
                if depth == 1:
                    continue
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    break
            out.append(char)
        return b" ".join(bytes(out).split())

    def quoted_string(self) -> bytes:
        """The content of a quoted string at the cursor, quoted-pairs resolved (RFC 5322 3.2.4),
        line breaks removed. The cursor must be on the opening DQUOTE."""
        data = self.data
        self.pos += 1
        out = bytearray()
        while self.pos < len(data):
            char = data[self.pos]
            self.pos += 1
            if char == 0x22:
                break
            if char == 0x5C and self.pos < len(data):
                out.append(data[self.pos])
                self.pos += 1
            elif char not in b"\r\n":
                out.append(char)
        return bytes(out)

    def raw_quoted_string(self) -> bytes:
        """A quoted string kept as written, quotes included (for a local-part, where the quotes
        are part of the address)."""
        start = self.pos
        self.quoted_string()
        return _LINE_BREAK.sub(b"", self.data[start:self.pos])

    def _match(self, pattern: re.Pattern[bytes]) -> bytes:
        found = pattern.match(self.data, self.pos)
        if found is None:
            return b""
        self.pos = found.end()
        return found.group()

    def token(self) -> bytes:
        """An RFC 2045 token, or b""."""
        return self._match(_TOKEN)

    def atom(self) -> bytes:
        return self._match(_ATOM)

    def dot_atom(self) -> bytes:
        return self._match(_DOT_ATOM)

    def loose_value(self) -> bytes:
        return self._match(_LOOSE_VALUE)

    def phrase(self) -> bytes:
        """Words (atoms, quoted strings, obs-phrase dots) joined by single spaces, after skipping
        leading CFWS; b"" when there is none. Encoded-words (RFC 2047) are atoms and stay as is."""
        words: list[bytes] = []
        while True:
            self.skip_cfws()
            if self.peek() == 0x22:
                words.append(self.quoted_string())
                continue
            word = self._match(_PHRASE_ATOM)
            if not word:
                return b" ".join(words)
            words.append(word)

    def domain_literal(self) -> bytes:
        """"[...]" kept with its brackets, whitespace inside removed. Cursor on '['."""
        end = self.data.find(b"]", self.pos)
        stop = len(self.data) if end < 0 else end + 1
        text = self.data[self.pos:stop]
        self.pos = stop
        return b"".join(text.split()) + (b"" if end >= 0 else b"]")

    def skip_to(self, stops: bytes) -> None:
        """Moves to the next octet in `stops` outside quoted strings and comments (or the end)."""
        data = self.data
        while self.pos < len(data):
            char = data[self.pos]
            if char in stops:
                return
            if char == 0x22:
                self.quoted_string()
            elif char == 0x28:
                self._comment()
            else:
                self.pos += 1


__all__ = [
    "MAX_STRUCTURED_VALUE",
    "HeaderField",
    "HeaderScanner",
    "first_value",
    "header_end",
    "named_fields",
    "parse_fields",
    "select_fields",
    "unfold",
    "values",
]
