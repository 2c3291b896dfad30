"""The MIME structure of a message as a tree of byte ranges, for IMAP FETCH and SEARCH.

`parse_message(message)` reads an in-memory message (CRLF line ends expected, bare LF tolerated)
and returns its root `MimePart`. Every part records where its header and body lie in the
message, never a copy of them, plus what BODYSTRUCTURE needs from its Content-* fields.

Theory of operation
-------------------
An entity (the message, a body part, or a message/rfc822 attachment) is a header section and a
body: the header ends at the first empty line (RFC 5322 2.1), no empty line means all header.
Its Content-Type picks one of three shapes:

* multipart/* (RFC 2046 5.1): the body is split at delimiter lines "--boundary" (transport
  padding allowed after it, RFC 2046 5.1.1). The CRLF before a delimiter belongs to the
  delimiter, not to the part; the preamble and the epilogue after "--boundary--" belong to no
  part. A missing close delimiter ends the last part at the end of the enclosing body; a
  multipart with no boundary parameter or no delimiter has no parts.
* message/rfc822 and message/global (RFC 2046 5.2.1, RFC 6532 3.5): the body is a whole
  message, parsed as a single child entity.
* anything else is a leaf.

Each child is parsed inside its parent's byte range only, so an inner part can never reach past
its parent. Nesting deeper than MAX_DEPTH, or parts beyond MAX_PARTS, are not split any more:
such a container becomes one opaque application/octet-stream leaf.

Choices, following Dovecot 2.3 (whose answers the tests replay byte for byte):

* Types, subtypes, parameter names and values are kept as written (no case change); the IMAP
  side adds the defaults "text" "plain" ("charset" "us-ascii") and "7bit" in lower case.
  RFC 3501 7.4.2 shows upper case only because its example message was written that way;
  both are valid since these strings are case-insensitive (RFC 2045 5.1).
* RFC 2231 continuations (name*0, name*1*...) are joined into one parameter ("name", or
  "name*" when the first section is extended) whose value stays percent-encoded.
* The first occurrence of each Content-* field wins. A message (top level or encapsulated)
  with neither MIME-Version (RFC 2045 4) nor Content-Type is not MIME: its other Content-*
  fields are ignored. Content-Type alone is honoured. An unparsable Content-Type (no
  "/subtype") means the default type.
* Sizes are octets as stored; line counts are the number of LF octets, as Dovecot counts.

Deliberate differences from Dovecot: an unquoted parameter value runs to the next ";" or
whitespace (so boundary=----=_Part_1 works, as in Thunderbird and Python's email package,
where Dovecot stops at "="), and a delimiter line must be the boundary alone (plus "--" and
padding), never a mere prefix of a longer line.
"""

from __future__ import annotations

import enum
import functools
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mailprime.message.header_lexer import (
    HeaderField,
    HeaderScanner,
    first_value,
    header_end,
    named_fields,
    parse_fields,
)

# Nesting limit: RFC 2046 sets none. 50 levels is deeper than any real mail and shallow enough
# for Python's recursion (about three frames per level).
MAX_DEPTH = 50
# Parts per message: RFC 2046 sets none. Bounds the size of a BODYSTRUCTURE reply and the work
# a hostile message of many empty parts can cause.
MAX_PARTS = 10_000
# RFC 2046 5.1.1 allows 1 to 70 characters; we accept longer ones up to the RFC 5322 2.1.1
# line limit, since no delimiter line can be longer than that anyway.
MAX_BOUNDARY = 998

# RFC 2231 3 and 4: name*N (continued) or name*N* (continued and encoded).
_SECTION = re.compile(rb"(.+?)\*([0-9]{1,3})(\*?)\Z", re.DOTALL)


class PartKind(enum.Enum):
    LEAF = "leaf"
    MULTIPART = "multipart"
    MESSAGE = "message"  # message/rfc822 or message/global: one child, the encapsulated message


Param = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Disposition:
    """Content-Disposition (RFC 2183): its type as written and its parameters."""

    kind: bytes
    params: tuple[Param, ...]


@dataclass(frozen=True, slots=True)
class ContentFields:
    """What the Content-* fields of one entity say (None: the field is absent or unusable)."""

    media_type: bytes = b"text"
    media_subtype: bytes = b"plain"
    params: tuple[Param, ...] = ()
    content_id: bytes | None = None
    description: bytes | None = None
    encoding: bytes | None = None
    md5: bytes | None = None
    disposition: Disposition | None = None
    language: tuple[bytes, ...] | None = None
    location: bytes | None = None


@dataclass(frozen=True, slots=True)
class MimePart:
    """One entity of the message. Its header is message[header_start:body_start] (the empty
    line that ends it included) and its body message[body_start:body_end]. For a MULTIPART,
    `parts` are the body parts; for a MESSAGE, `parts` holds the encapsulated message."""

    header_start: int
    body_start: int
    body_end: int
    content: ContentFields
    lines: int
    kind: PartKind
    parts: tuple[MimePart, ...] = ()

    @property
    def body_size(self) -> int:
        return self.body_end - self.body_start

    @property
    def is_text(self) -> bool:
        return self.kind is PartKind.LEAF and self.content.media_type.lower() == b"text"

    @property
    def transfer_encoding(self) -> str:
        """The Content-Transfer-Encoding, lower-cased; "7bit" when absent (RFC 2045 6.1)."""
        encoding = self.content.encoding
        return encoding.decode("ascii", "replace").lower() if encoding else "7bit"

    @property
    def charset(self) -> str:
        """The charset parameter, lower-cased; "us-ascii" when absent (RFC 2045 5.2)."""
        for name, value in self.content.params:
            if name.lower() == b"charset" and value:
                return value.decode("ascii", "replace").strip().lower()
        return "us-ascii"

    def header(self, message: bytes) -> bytes:
        return message[self.header_start:self.body_start]

    def body(self, message: bytes) -> bytes:
        return message[self.body_start:self.body_end]

    def header_fields(self, message: bytes) -> tuple[HeaderField, ...]:
        return parse_fields(message, self.header_start, self.body_start)


# Parsing the tree -------------------------------------------------------------------------------

_TEXT_PLAIN = ContentFields()
_MESSAGE_RFC822 = ContentFields(media_type=b"message", media_subtype=b"rfc822")
_OPAQUE = (b"application", b"octet-stream")


def parse_message(message: bytes) -> MimePart:
    """The MIME tree of `message`. Never raises: whatever the input, some tree comes back."""
    return _TreeParser(message).entity(0, len(message), _TEXT_PLAIN, 0, message_root=True)


class _TreeParser:
    """One parse: the message and the number of parts still allowed (MAX_PARTS)."""

    __slots__ = ("budget", "message")

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.budget = MAX_PARTS

    def entity(self, start: int, end: int, default: ContentFields, depth: int, *,
               message_root: bool = False) -> MimePart:
        message = self.message
        body_start = header_end(message, start, end)
        fields = named_fields(message, (b"content-",), start, body_start, prefix=True)
        if message_root and not _is_mime(message, fields, start, body_start):
            fields = []
        content = content_fields(message, fields, default)
        media_type = content.media_type.lower()
        subtype = content.media_subtype.lower()
        container = media_type == b"multipart" or (
            media_type == b"message" and subtype in (b"rfc822", b"global"))
        kind = PartKind.LEAF
        parts: tuple[MimePart, ...] = ()
        if container and (depth >= MAX_DEPTH or self.budget <= 0):
            content = _replace_type(content, *_OPAQUE)
        elif media_type == b"multipart":
            kind = PartKind.MULTIPART
            boundary = next((v for n, v in content.params if n.lower() == b"boundary"), b"")
            if 0 < len(boundary) <= MAX_BOUNDARY:
                # RFC 2046 5.1.5: the parts of a digest default to message/rfc822.
                child_default = _MESSAGE_RFC822 if subtype == b"digest" else _TEXT_PLAIN
                parts = self.multipart(body_start, end, boundary, child_default, depth + 1)
        elif container:
            kind = PartKind.MESSAGE
            self.budget -= 1
            parts = (self.entity(body_start, end, _TEXT_PLAIN, depth + 1, message_root=True),)
        return MimePart(start, body_start, end, content, message.count(b"\n", body_start, end), kind, parts)

    def multipart(self, start: int, end: int, boundary: bytes, default: ContentFields,
                  depth: int) -> tuple[MimePart, ...]:
        message = self.message
        parts: list[MimePart] = []
        content_start = -1
        for line_start, line_end, closing in _delimiters(message, start, end, boundary):
            if content_start >= 0:
                if self.budget <= 0:
                    break  # out of parts: the last one keeps the rest of the body
                content_end = _strip_line_break_before(message, line_start, content_start)
                self.budget -= 1
                parts.append(self.entity(content_start, content_end, default, depth))
            if closing:
                return tuple(parts)
            content_start = line_end
        if content_start >= 0 and self.budget > 0:
            self.budget -= 1
            parts.append(self.entity(content_start, end, default, depth))
        elif content_start >= 0 and parts:
            last = parts.pop()  # the budget ran out: stretch the last part to the end of the body
            parts.append(self.entity(last.header_start, end, default, depth))
        return tuple(parts)


def _is_mime(message: bytes, content: list[HeaderField], start: int, end: int) -> bool:
    """A message is MIME if it says so (RFC 2045 4: MIME-Version) or has a Content-Type."""
    return any(field.is_named(b"content-type") for field in content) or bool(
        named_fields(message, (b"mime-version",), start, end))


def _delimiters(message: bytes, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(line start, offset after the line end, is the close delimiter) for each delimiter line
    of `boundary` in message[start:end] (RFC 2046 5.1.1)."""
    at_start, after_line_feed = _delimiter_patterns(boundary)
    first = at_start.match(message, start, end)
    for found in itertools.chain([first] if first else [], after_line_feed.finditer(message, start, end)):
        line_start = found.start() + (message[found.start()] == 0x0A)  # skip the LF matched before "--"
        line_end = found.end()
        if message.startswith(b"\r\n", line_end, end):
            line_end += 2
        elif message.startswith(b"\n", line_end, end):
            line_end += 1
        yield line_start, line_end, found.group(1) is not None


@functools.lru_cache(maxsize=64)
def _delimiter_patterns(boundary: bytes) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """A delimiter line at the start of the range, and one after a line feed. The line end is a
    lookahead, so the LF that ends one delimiter line can precede the next one."""
    line = rb"--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r?\n|\Z)"
    return re.compile(line), re.compile(rb"\n" + line)


def _strip_line_break_before(message: bytes, line_start: int, floor: int) -> int:
    """The CRLF (or LF) just before a delimiter belongs to the delimiter (RFC 2046 5.1.1)."""
    end = line_start
    if end > floor and message[end - 1] == 0x0A:
        end -= 1
        if end > floor and message[end - 1] == 0x0D:
            end -= 1
    return end


# Content-* fields -------------------------------------------------------------------------------

def content_fields(message: bytes, fields: Sequence[HeaderField], default: ContentFields) -> ContentFields:
    """The Content-* fields of one header (RFC 2045, RFC 2183, RFC 3282, RFC 2557, RFC 1864)."""
    media: tuple[bytes, bytes, tuple[Param, ...]] | None = None
    seen: dict[bytes, bytes] = {}
    for field in fields:
        name = field.name.lower()
        if name.startswith(b"content-") and name not in seen:
            seen[name] = field.value(message)
    raw_type = seen.get(b"content-type")
    if raw_type is not None:
        media = parse_content_type(raw_type)
    media_type, subtype, params = media or (default.media_type, default.media_subtype, ())
    disposition = seen.get(b"content-disposition")
    language = seen.get(b"content-language")
    encoding = seen.get(b"content-transfer-encoding")
    return ContentFields(
        media_type=media_type,
        media_subtype=subtype,
        params=params,
        content_id=seen.get(b"content-id"),
        description=seen.get(b"content-description"),
        encoding=parse_encoding(encoding) if encoding is not None else None,
        md5=seen.get(b"content-md5"),
        disposition=parse_disposition(disposition) if disposition is not None else None,
        language=parse_language(language) if language is not None else None,
        location=seen.get(b"content-location"),
    )


def _replace_type(content: ContentFields, media_type: bytes, subtype: bytes) -> ContentFields:
    return ContentFields(media_type, subtype, (), content.content_id, content.description,
                         content.encoding, content.md5, content.disposition, content.language,
                         content.location)


def parse_content_type(value: bytes) -> tuple[bytes, bytes, tuple[Param, ...]] | None:
    """type, subtype and parameters of a Content-Type value (RFC 2045 5.1), or None when it has
    no "type/subtype"."""
    scanner = HeaderScanner(value)
    scanner.skip_cfws()
    media_type = scanner.token()
    scanner.skip_cfws()
    if not media_type or not scanner.accept(b"/"):
        return None
    scanner.skip_cfws()
    subtype = scanner.token()
    if not subtype:
        return None
    return media_type, subtype, parse_params(scanner)


def parse_encoding(value: bytes) -> bytes | None:
    """The Content-Transfer-Encoding token (RFC 2045 6.1), None if the value is not a token."""
    scanner = HeaderScanner(value)
    scanner.skip_cfws()
    return scanner.token() or None


def parse_disposition(value: bytes) -> Disposition | None:
    """Content-Disposition (RFC 2183 2): type and parameters, None if there is no type."""
    scanner = HeaderScanner(value)
    scanner.skip_cfws()
    kind = scanner.token()
    return Disposition(kind, parse_params(scanner)) if kind else None


def parse_language(value: bytes) -> tuple[bytes, ...] | None:
    """Content-Language (RFC 3282 2): the comma-separated language tags, None if none."""
    scanner = HeaderScanner(value)
    tags: list[bytes] = []
    while not scanner.at_end():
        scanner.skip_cfws()
        tag = scanner.token()
        if tag:
            tags.append(tag)
        scanner.skip_cfws()
        if not scanner.accept(b","):
            break
    return tuple(tags) or None


def parse_params(scanner: HeaderScanner) -> tuple[Param, ...]:
    """The ";" name "=" value list that follows a Content-Type or Content-Disposition (RFC 2045
    5.1), values unquoted, RFC 2231 continuations joined. Junk between parameters is skipped."""
    params: list[Param] = []
    while True:
        scanner.skip_cfws()
        if scanner.at_end():
            break
        if not scanner.accept(b";"):
            scanner.skip_to(b";")
            continue
        scanner.skip_cfws()
        name = scanner.token()
        scanner.skip_cfws()
        if not name or not scanner.accept(b"="):
            continue
        scanner.skip_cfws()
        value = scanner.quoted_string() if scanner.peek() == 0x22 else scanner.loose_value()
        params.append((name, value))
    return join_continuations(params)


def join_continuations(params: list[Param]) -> tuple[Param, ...]:
    """RFC 2231 3: name*0, name*1... (each possibly encoded, "name*N*") become one parameter at
    the place of section 0, named "name*" when section 0 is encoded; sections after a gap in
    the numbering are dropped. Values are concatenated as written (still percent-encoded)."""
    sections: dict[bytes, dict[int, tuple[bool, bytes]]] = {}
    for name, value in params:
        found = _SECTION.match(name)
        if found:
            number = int(found.group(2))
            sections.setdefault(found.group(1).lower(), {}).setdefault(
                number, (bool(found.group(3)), value))
    out: list[Param] = []
    for name, _value in params:
        found = _SECTION.match(name)
        if not found:
            out.append((name, _value))
            continue
        base = found.group(1)
        numbered = sections.get(base.lower())
        if int(found.group(2)) != 0 or numbered is None or 0 not in numbered:
            continue
        pieces: list[bytes] = []
        number = 0
        while number in numbered:
            pieces.append(numbered[number][1])
            number += 1
        out.append((base + b"*" if numbered[0][0] else base, b"".join(pieces)))
        del sections[base.lower()]  # a repeated name*0 is ignored
    return tuple(out)


# Finding parts ----------------------------------------------------------------------------------

def find_part(tree: MimePart, path: tuple[int, ...]) -> MimePart | None:
    """The part that IMAP section number `path` names (RFC 3501 6.4.5), or None.

    Part N of a multipart is its Nth body part. A part that is not a multipart has exactly one
    part, number 1: itself (so [1] of a single-part message is its body, and, as Dovecot
    answers, [1.1.1] is [1.1] when 1.1 is a text part), and only as the last number. Numbers
    after a message/rfc822 part walk into the encapsulated message."""
    node = tree
    for index, number in enumerate(path):
        more = index + 1 < len(path)
        if node.kind is PartKind.MULTIPART:
            if not 1 <= number <= len(node.parts):
                return None
            node = node.parts[number - 1]
        elif number != 1 or (more and node.kind is not PartKind.MESSAGE):
            return None
        if more and node.kind is PartKind.MESSAGE:
            node = node.parts[0]
    return node


def walk(tree: MimePart) -> Iterator[MimePart]:
    """Every part, depth first, the tree itself included."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.parts))


def header_value(message: bytes, part: MimePart, name: bytes) -> bytes | None:
    """The unfolded value of the part's first `name` field, or None."""
    return first_value(message, part.header_fields(message), name)


__all__ = [
    "MAX_BOUNDARY",
    "MAX_DEPTH",
    "MAX_PARTS",
    "ContentFields",
    "Disposition",
    "MimePart",
    "Param",
    "PartKind",
    "content_fields",
    "find_part",
    "header_value",
    "join_continuations",
    "parse_content_type",
    "parse_disposition",
    "parse_encoding",
    "parse_language",
    "parse_message",
    "parse_params",
    "walk",
]
