"""FETCH assembly: the items of one "* n FETCH (...)" answer (RFC 3501 6.4.5 and 7.4.2, RFC 9051
6.4.5 and 7.5.2, RFC 3516 BINARY, RFC 7162 MODSEQ).

The message layer (`mailprime.message.imap_fetch`) computes sections, ENVELOPE and BODYSTRUCTURE
as plain values; this module picks the item names, turns those values into the IMAP response
model, and decides how each body goes on the wire:

* bodies are always literals (they may hold CR, LF and 8-bit octets); BINARY content holding
  NUL goes in a literal8 "~{n}" (RFC 3516 4.3);
* a body larger than STREAM_THRESHOLD becomes a `StreamedLiteral` whose `source` is a
  `LiteralSource`: an object with `size` and `async def chunks()` yielding exactly `size`
  octets. The driver writes "{size}\\r\\n" and then copies the chunks to the socket, so a 50 MB
  message is never concatenated into one response buffer;
* when a large message is fetched only whole (BODY[], BODY.PEEK[], RFC822, with or without a
  partial range), it is not loaded at all: the source streams it from the store
  (`BlobSource`), so memory stays bounded by one chunk whatever the message size;
* when only its header section is needed (ENVELOPE, BODY[HEADER...], RFC822.HEADER), a large
  message has only its header read (`MessageContentCache.get_header`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mailprime.domain.errors import DomainError, StorageError
from mailprime.domain.ids import BlobId
from mailprime.domain.mail import StoredMessage
from mailprime.message import imap_fetch
from mailprime.message.imap_values import ImapValue
from mailprime.proto.imap.types import (
    NIL,
    Atom,
    BinarySection,
    BinarySize,
    BodySection,
    DateTime,
    FetchAttribute,
    FetchItem,
    Flag,
    Juxtaposed,
    Literal,
    ParenList,
    Partial,
    Section,
    StreamedLiteral,
    String,
    Value,
    fetch_item_name,
)
from mailprime.services.imap.content import HEADER_ONLY_MIN, MessageContentCache, ParsedMessage
from mailprime.storage.ports import MailStore

# Bodies above this size are streamed by the driver rather than built into the response (our
# choice: small enough to keep response buffers modest, large enough that ordinary messages
# take the simple path).
STREAM_THRESHOLD = 1024 * 1024
# Pieces a LiteralSource hands to the driver.
CHUNK_SIZE = 64 * 1024

# Attributes answered from the mailbox row alone (RFC 3501 6.4.5): no octets needed.
_ROW_ITEMS = frozenset({FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE,
                        FetchItem.UID, FetchItem.MODSEQ})
_WHOLE = Section()


class UnknownCte(DomainError):
    """BINARY[part] or BINARY.SIZE[part] of a part whose Content-Transfer-Encoding we cannot
    undo: the session answers NO [UNKNOWN-CTE] (RFC 3516 4.3, RFC 9051 7.1)."""

    imap_code = "UNKNOWN-CTE"


def sets_seen(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether fetching `attributes` sets \\Seen (RFC 3501 6.4.5, RFC 9051 6.4.5): BODY[...]
    and BINARY[...] without .PEEK, RFC822 and RFC822.TEXT do; everything else does not."""
    for attribute in attributes:
        if isinstance(attribute, BodySection | BinarySection) and not attribute.peek:
            return True
        if attribute in (FetchItem.RFC822, FetchItem.RFC822_TEXT):
            return True
    return False


def needs_content(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether any attribute needs the message's octets (FLAGS, UID, INTERNALDATE, RFC822.SIZE
    and MODSEQ come from the mailbox row)."""
    return any(a not in _ROW_ITEMS for a in attributes)


async def fetch_items(message: StoredMessage, attributes: Sequence[FetchAttribute], *,
                      cache: MessageContentCache, store: MailStore, rev2: bool = False,
                      include_uid: bool = False, include_modseq: bool = False) -> tuple[Value, ...]:
    """The flat name/value list inside "* n FETCH (...)" for `message`.

    UID comes first when asked or `include_uid` (UID FETCH, RFC 3501 6.4.8), then MODSEQ when
    asked or `include_modseq` (CONDSTORE enabled, RFC 7162 3.1.4), then the other attributes in
    the order requested; an attribute asked twice is answered once. FLAGS are `message.flags`:
    the caller passes the message as it is after any implicit \\Seen.

    `rev2` is whether the client enabled IMAP4rev2: its BODYSTRUCTURE then describes a
    message/global part like message/rfc822 (RFC 9051 9 body-type-msg). How strings go on the
    wire (quoted, UTF-8 or literal) is the serializer's choice for the connection's mode.
    Raises NotFound when the message's content is gone (expunged meanwhile), UnknownCte for
    BINARY of an unknown encoding.
    """
    ordered = _ordered(attributes, include_uid=include_uid, include_modseq=include_modseq)
    content: ParsedMessage | None = None
    streamed = _streams_from_store(ordered, message)
    if needs_content(ordered) and not streamed:
        if _header_only(ordered) and message.size > HEADER_ONLY_MIN:
            content = await cache.get_header(store, message.blob_id, size=message.size)
        else:
            content = await cache.get(store, message.blob_id, size=message.size)
    items: list[Value] = []
    for attribute in ordered:
        items.append(Atom(fetch_item_name(attribute)))
        if streamed and _is_whole_body(attribute):
            items.append(_blob_value(store, message, attribute))
        elif attribute in _ROW_ITEMS:
            items.append(_row_value(message, attribute))
        else:
            assert content is not None  # needs_content() said so
            items.append(_content_value(content, attribute, rev2))
    return tuple(items)


def _ordered(attributes: Sequence[FetchAttribute], *, include_uid: bool,
             include_modseq: bool) -> list[FetchAttribute]:
    """UID, MODSEQ, then the rest, each response name once."""
    first: list[FetchAttribute] = []
    if include_uid or FetchItem.UID in attributes:
        first.append(FetchItem.UID)
    if include_modseq or FetchItem.MODSEQ in attributes:
        first.append(FetchItem.MODSEQ)
    seen = {fetch_item_name(a) for a in first}
    out = first
    for attribute in attributes:
        name = fetch_item_name(attribute)
        if name not in seen:
            seen.add(name)
            out.append(attribute)
    return out


# Row items -------------------------------------------------------------------------------------


def _row_value(message: StoredMessage, attribute: FetchAttribute) -> Value:
    if attribute is FetchItem.FLAGS:
        # No \Recent: the store does not track it (RFC 3501 2.3.2 lets a server not do so).
        return ParenList(tuple(Flag(f) for f in sorted(message.flags)))
    if attribute is FetchItem.INTERNALDATE:
        return DateTime(message.internal_date)
    if attribute is FetchItem.RFC822_SIZE:
        return message.size
    if attribute is FetchItem.UID:
        return message.uid
    if attribute is FetchItem.MODSEQ:
        return ParenList((message.modseq,))  # RFC 7162 3.1.4: "MODSEQ (n)"
    raise TypeError(f"not a row item: {attribute!r}")


# Content items ---------------------------------------------------------------------------------


def _content_value(content: ParsedMessage, attribute: FetchAttribute, rev2: bool) -> Value:
    raw, tree = content.raw, content.tree
    if isinstance(attribute, BodySection):
        section = attribute.section
        data = imap_fetch.section_bytes(raw, tree, section.part, section.text, section.fields)
        return _body_value(_cut(data, attribute.partial))
    if isinstance(attribute, BinarySection):
        decoded = imap_fetch.binary_section(raw, tree, attribute.part)
        if decoded is None:
            raise UnknownCte(f"BINARY[{_part_name(attribute.part)}]: unknown Content-Transfer-Encoding")
        data = _cut(decoded, attribute.partial)
        return _body_value(data, binary=b"\x00" in data)
    if isinstance(attribute, BinarySize):
        size = imap_fetch.binary_size(raw, tree, attribute.part)
        if size is None:
            raise UnknownCte(f"BINARY.SIZE[{_part_name(attribute.part)}]: unknown Content-Transfer-Encoding")
        return size
    if attribute is FetchItem.ENVELOPE:
        return response_value(imap_fetch.envelope(content.header))
    if attribute in (FetchItem.BODYSTRUCTURE, FetchItem.BODY):
        structure = imap_fetch.bodystructure(raw, tree, extensible=attribute is FetchItem.BODYSTRUCTURE,
                                             message_global=rev2)
        return response_value(structure)
    if attribute is FetchItem.RFC822:
        return _body_value(raw)
    if attribute is FetchItem.RFC822_HEADER:
        return _body_value(content.header)
    if attribute is FetchItem.RFC822_TEXT:
        return _body_value(imap_fetch.section_bytes(raw, tree, (), "TEXT"))
    raise TypeError(f"not a content item: {attribute!r}")


def _part_name(part: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in part)


def _cut(data: bytes, window: Partial | None) -> bytes:
    """<offset.length> (RFC 3501 6.4.5): past the end gives the empty string."""
    return data if window is None else imap_fetch.partial(data, window.offset, window.length)


def _body_value(data: bytes, *, binary: bool = False) -> Value:
    if not data:
        return String(b"")
    if len(data) > STREAM_THRESHOLD:
        return StreamedLiteral(len(data), BytesSource(data), binary=binary)
    return Literal(data, binary=binary)


def response_value(value: ImapValue) -> Value:
    """The neutral form of `imap_values` as response values: None -> NIL, bytes -> String
    (the serializer picks quoted or literal for the connection's mode), int -> int, tuple ->
    ParenList, and a `list` inside one -> Juxtaposed (written back to back: the bodies of a
    multipart, the addresses of an envelope field; RFC 3501 9 body-type-mpart, env-from)."""
    if value is None:
        return NIL
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return String(value)
    if isinstance(value, list):
        raise TypeError("a back-to-back list only occurs inside a parenthesised one")
    return ParenList(tuple(_juxtaposed(item) if isinstance(item, list) else response_value(item)
                           for item in value))


def _juxtaposed(items: list[ImapValue]) -> Juxtaposed:
    lists: list[ParenList] = []
    for item in items:
        value = response_value(item)
        if not isinstance(value, ParenList):  # message.imap_fetch juxtaposes bodies and addresses
            raise TypeError(f"only parenthesised lists stand back to back, not {item!r}")
        lists.append(value)
    return Juxtaposed(tuple(lists))


# Streaming -------------------------------------------------------------------------------------


class LiteralSource(Protocol):
    """What a `StreamedLiteral.source` made here is. The driver (which may not import services)
    declares the same shape on its side: `size` octets in all, handed out by `chunks()` in pieces
    of bounded size (CHUNK_SIZE, or the store's read size); each call starts from the first octet."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class BytesSource:
    """A LiteralSource over bytes already in memory (a decoded BINARY section, a section of a
    parsed message)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    async def chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self._data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start:start + CHUNK_SIZE])


class BlobSource:
    """A LiteralSource reading `size` octets from `offset` of a stored message, opened only when
    the driver asks for the chunks. If the content disappeared in between (the message was
    expunged and its blob released), `chunks` raises NotFound, and StorageError if the blob is
    shorter than promised: the literal's size is already on the wire, so the driver can only
    close the connection (RFC 3501 has no way to abort a literal)."""

    __slots__ = ("_blob_id", "_offset", "_size", "_store")

    def __init__(self, store: MailStore, blob_id: BlobId, offset: int, size: int) -> None:
        self._store = store
        self._blob_id = blob_id
        self._offset = offset
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def chunks(self) -> AsyncIterator[bytes]:
        skip, left = self._offset, self._size
        async with self._store.open_blob(self._blob_id) as blob:
            async for chunk in blob.chunks():
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                piece = chunk[skip:skip + left]
                skip = 0
                left -= len(piece)
                if piece:
                    yield piece
                if left == 0:
                    return
        if left:
            raise StorageError(f"blob {self._blob_id} is {left} octets shorter than its literal")


def _header_only(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether the octets needed are those of the message's header section alone."""
    for attribute in attributes:
        if attribute in _ROW_ITEMS or attribute in (FetchItem.ENVELOPE, FetchItem.RFC822_HEADER):
            continue
        if not (isinstance(attribute, BodySection) and not attribute.section.part
                and attribute.section.text in _HEADER_TEXTS):
            return False
    return True


_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def _is_whole_body(attribute: FetchAttribute) -> bool:
    """BODY[] / BODY.PEEK[] (with or without a partial) and RFC822: the message as stored."""
    return attribute is FetchItem.RFC822 or (
        isinstance(attribute, BodySection) and attribute.section == _WHOLE)


def _streams_from_store(attributes: Sequence[FetchAttribute], message: StoredMessage) -> bool:
    """A large message of which only whole-message bodies are asked is streamed from the store
    without being loaded."""
    if message.size <= STREAM_THRESHOLD:
        return False
    content = [a for a in attributes if a not in _ROW_ITEMS]
    return bool(content) and all(_is_whole_body(a) for a in content)


def _blob_value(store: MailStore, message: StoredMessage, attribute: FetchAttribute) -> Value:
    offset, size = 0, message.size
    if isinstance(attribute, BodySection) and attribute.partial is not None:
        offset = attribute.partial.offset
        size = max(0, min(attribute.partial.length, message.size - offset))
    if size == 0:
        return String(b"")
    return StreamedLiteral(size, BlobSource(store, message.blob_id, offset, size))
