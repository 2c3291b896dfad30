"""What IMAP FETCH returns about a message's structure and contents, as pure functions.

Every function takes the message octets and its tree from `mime_tree.parse_message`, and
returns either bytes (a section's contents) or a value in the neutral `ImapValue` form
(NIL = None, number = int, string = bytes, parenthesised list = tuple, and a list for items
written back to back; see imap_values, which also holds the reference `render`).

* `bodystructure(message, tree, extensible=True)` is BODYSTRUCTURE, `extensible=False` is BODY
  (RFC 3501 7.4.2, RFC 9051 7.5.2). A message/rfc822 part carries the ENVELOPE, the
  BODYSTRUCTURE and the line count of the message inside it.
* `section_bytes` is BODY[section] (RFC 3501 6.4.5): "", HEADER, HEADER.FIELDS (names),
  HEADER.FIELDS.NOT (names), TEXT and MIME, each optionally after a part number.
* `partial` applies <offset.length>.
* `binary_section` / `binary_size` are BINARY[part] and BINARY.SIZE[part] (RFC 3516, RFC 9051
  6.4.5): the part's body with its Content-Transfer-Encoding removed.

The defaults added for BODYSTRUCTURE are Dovecot's, in lower case: "text" "plain",
("charset" "us-ascii") for a text part without a charset (appended after its other
parameters), "7bit", and for a multipart with no body part at all (which the grammar forbids:
1*body) one empty text/plain part.

Checked against Dovecot 2.3.19 on a few hundred messages: BODYSTRUCTURE, BODY, ENVELOPE and
every BODY[section] agree byte for byte, except where we chose otherwise:

* HEADER.FIELDS.NOT that leaves no field still returns the blank line (RFC 3501 6.4.5);
  Dovecot sends an empty string for a message that is all header.
* A nested multipart part ends before the CRLF of the enclosing delimiter (RFC 2046 5.1.1),
  so BODY[1.2] of a multipart/related inside a multipart/alternative ends with "--rel--"
  where Dovecot adds the CRLF.
* BINARY decodes leniently (RFC 2045 6.7 note, 6.8): a bad "=XY" stays as written and base64
  junk is skipped, where Dovecot answers NO [PARSE] or fails. BINARY of a multipart or
  message/rfc822 part is its body as stored (RFC 2045 6.4 allows containers only identity
  encodings); Dovecot re-encodes every part inside it to binary.
* With two Content-Disposition fields, the first wins; Dovecot lets a second one replace a
  first one that had no parameters.
"""

from __future__ import annotations

import binascii
import re

from mailprime.message.header_lexer import select_fields
from mailprime.message.imap_envelope import envelope
from mailprime.message.imap_values import ImapValue, render
from mailprime.message.mime_tree import Disposition, MimePart, Param, PartKind, find_part

# RFC 3501 6.4.5 section-text after the part number (upper-cased here); "" is the whole part.
SECTION_TEXTS = frozenset({"", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
# RFC 2045 6.1: the identity encodings; 6.7 and 6.8 the two that BINARY undoes. Any other value
# is an unknown encoding (RFC 3516 4.2: the server answers NO [UNKNOWN-CTE]).
IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
DECODABLE_ENCODINGS = IDENTITY_ENCODINGS | {"base64", "quoted-printable"}

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(c for c in range(256) if c not in _BASE64_ALPHABET)
# RFC 2045 6.7 rule 3: trailing whitespace on an encoded line was added in transport; delete it.
_QP_TRAILING_SPACE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


# BODYSTRUCTURE and BODY -------------------------------------------------------------------------

def bodystructure(message: bytes, tree: MimePart, extensible: bool = True, *,
                  message_global: bool = False) -> ImapValue:
    """BODYSTRUCTURE (extensible=True: with the extension data) or BODY (False).

    Set `message_global` once the client has enabled IMAP4rev2: RFC 9051 (body-type-msg) gives
    message/global the envelope, body and line count of message/rfc822, but RFC 3501's grammar
    knows only MESSAGE/RFC822, so an IMAP4rev1 client gets message/global as a basic body (as
    Dovecot 2.3 sends it). Section numbers walk into message/global either way."""
    return _body(message, tree, extensible, message_global)


def _body(message: bytes, part: MimePart, ext: bool, message_global: bool) -> ImapValue:
    content = part.content
    if part.kind is PartKind.MULTIPART:
        children: list[ImapValue] = [_body(message, child, ext, message_global) for child in part.parts]
        multipart: list[ImapValue] = [children or [_empty_text_part(ext)], content.media_subtype]
        if ext:
            multipart += [tuple(_params(content.params)) or None, _disposition(content.disposition),
                          _language(content.language), content.location]
        return tuple(multipart)
    text = part.is_text
    params = _params(content.params)
    if text and not any(name.lower() == b"charset" for name, _ in content.params):
        params.extend((b"charset", b"us-ascii"))
    single: list[ImapValue] = [
        content.media_type, content.media_subtype, tuple(params) or None, content.content_id,
        content.description, content.encoding or b"7bit", part.body_size,
    ]
    if part.kind is PartKind.MESSAGE and (message_global or content.media_subtype.lower() == b"rfc822"):
        inner = part.parts[0]
        single += [envelope(inner.header(message)), _body(message, inner, ext, message_global), part.lines]
    elif text:
        single.append(part.lines)
    if ext:
        single += [content.md5, _disposition(content.disposition), _language(content.language),
                   content.location]
    return tuple(single)


def _empty_text_part(ext: bool) -> ImapValue:
    empty: tuple[ImapValue, ...] = (b"text", b"plain", (b"charset", b"us-ascii"), None, None, b"7bit", 0, 0)
    return (*empty, None, None, None, None) if ext else empty


def _params(params: tuple[Param, ...]) -> list[ImapValue]:
    flat: list[ImapValue] = []
    for name, value in params:
        flat += [name, value]
    return flat


def _disposition(disposition: Disposition | None) -> ImapValue:
    if disposition is None:
        return None
    return (disposition.kind, tuple(_params(disposition.params)) or None)


def _language(language: tuple[bytes, ...] | None) -> ImapValue:
    return tuple(language) if language else None


# BODY[section] ----------------------------------------------------------------------------------

def section_bytes(message: bytes, tree: MimePart, part: tuple[int, ...] = (), text: str | None = None,
                  fields: tuple[str, ...] = ()) -> bytes:
    """The contents of BODY[part.text (fields)] (RFC 3501 6.4.5).

    `part` is the section number ((): the whole message), `text` the section-text ("HEADER",
    "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"; None or "": the part itself) and
    `fields` the field names of HEADER.FIELDS[.NOT]. A part that does not exist, HEADER or TEXT
    after a part that is not message/rfc822, and MIME without a part number give b"".
    Raises ValueError for a section-text that is none of these (the parser's job to refuse)."""
    spec = (text or "").upper()
    if spec not in SECTION_TEXTS:
        raise ValueError(f"unknown section text {text!r}")
    if not part:
        if spec == "":
            return message
        if spec == "MIME":
            return b""
        target = tree
    else:
        node = find_part(tree, part)
        if node is None:
            return b""
        if spec == "":
            return node.body(message)
        if spec == "MIME":
            return node.header(message)
        if node.kind is not PartKind.MESSAGE:
            return b""
        target = node.parts[0]
    if spec == "HEADER":
        return target.header(message)
    if spec == "TEXT":
        return target.body(message)
    return header_fields(message, target, fields, exclude=spec == "HEADER.FIELDS.NOT")


def header_fields(message: bytes, part: MimePart, names: tuple[str, ...], *, exclude: bool = False) -> bytes:
    """HEADER.FIELDS (or, with `exclude`, HEADER.FIELDS.NOT): the fields of the part's header
    whose name is (is not) in `names`, case-insensitively, in their original order and folding,
    followed by the empty line (RFC 3501 6.4.5)."""
    wanted = [name.encode("utf-8", "replace") for name in names]
    fields = select_fields(message, wanted, part.header_start, part.body_start, exclude=exclude)
    if fields and not fields.endswith(b"\n"):
        fields += b"\r\n"  # the last line of a message that is all header
    return fields + b"\r\n"


def partial(data: bytes, offset: int, length: int | None = None) -> bytes:
    """<offset.length> (RFC 3501 6.4.5): from `offset` on, at most `length` octets; empty when
    the offset is past the end."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("partial offset and length are unsigned")
    if offset >= len(data):
        return b""
    return data[offset:] if length is None else data[offset:offset + length]


# BINARY -----------------------------------------------------------------------------------------

def binary_section(message: bytes, tree: MimePart, part: tuple[int, ...] = ()) -> bytes | None:
    """BINARY[part]: the part's body with its transfer encoding undone (RFC 3516 4.1). None when
    the encoding is unknown (answer NO [UNKNOWN-CTE]); b"" when the part does not exist. The
    whole message (part ()) and multipart or message/rfc822 parts are returned as stored: RFC
    2045 6.4 allows them only identity encodings."""
    if not part:
        return message
    node = find_part(tree, part)
    if node is None:
        return b""
    body = node.body(message)
    if node.kind is not PartKind.LEAF:
        return body
    return decode_transfer_encoding(body, node.transfer_encoding)


def binary_size(message: bytes, tree: MimePart, part: tuple[int, ...] = ()) -> int | None:
    """BINARY.SIZE[part] (RFC 3516 4.2): the size of BINARY[part], None for an unknown encoding."""
    data = binary_section(message, tree, part)
    return None if data is None else len(data)


def decode_transfer_encoding(body: bytes, encoding: str) -> bytes | None:
    """`body` decoded from `encoding` (a Content-Transfer-Encoding, any case), None if unknown.
    Lenient, as readers must be (RFC 2045 6.7, 6.8): never raises on bad input."""
    encoding = encoding.lower()
    if encoding in IDENTITY_ENCODINGS:
        return body
    if encoding == "base64":
        return decode_base64(body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(_QP_TRAILING_SPACE.sub(b"", body))
    return None


def decode_base64(body: bytes) -> bytes:
    """RFC 2045 6.8: characters outside the alphabet are ignored, and the first "=" ends the
    data. A last group of 2 or 3 characters is decoded without its missing padding; a single
    left-over character carries no whole octet and is dropped."""
    end = body.find(b"=")
    data = (body if end < 0 else body[:end]).translate(None, _NOT_BASE64)
    usable = len(data) - (len(data) % 4 == 1)
    data = data[:usable]
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


__all__ = [
    "DECODABLE_ENCODINGS",
    "IDENTITY_ENCODINGS",
    "SECTION_TEXTS",
    "ImapValue",
    "binary_section",
    "binary_size",
    "bodystructure",
    "decode_base64",
    "decode_transfer_encoding",
    "envelope",
    "header_fields",
    "partial",
    "render",
    "section_bytes",
]
