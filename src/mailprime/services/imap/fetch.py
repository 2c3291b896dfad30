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
  message has only its header read (`MessageContentCache.get_header`);
* the MIME tree is parsed only for what needs it (BODYSTRUCTURE, BODY, part sections, BINARY):
  sections of the message itself are cut at the end of its header.

A FETCH names many messages and the same attributes for each: `plan_fetch` works out once per
command the order, names and value makers of the attributes and what content they need, and
`FetchPlan.items` applies it to each message (the hot path of a mail client's first sync).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailprime.domain.errors import DomainError, StorageError
from mailprime.domain.ids import BlobId, MailboxId
from mailprime.domain.mail import StoredMessage
from mailprime.message import imap_fetch
from mailprime.message.header_lexer import select_fields
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
from mailprime.storage.ports import MailboxStore, MailStore

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
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


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


# The plan ------------------------------------------------------------------------------------


class Need(enum.IntEnum):
    """What of a message's content a FETCH needs, least first."""

    NOTHING = 0  # row items only
    HEADER = 1  # the header section (ENVELOPE, top-level BODY[HEADER...], RFC822.HEADER)
    OCTETS = 2  # the octets and where the header ends (other top-level sections, RFC822[.TEXT])
    TREE = 3  # the MIME tree too (BODYSTRUCTURE, BODY, part sections, BINARY)


Step = Callable[[StoredMessage, ParsedMessage | None, bool], Value]
"""One attribute's value for a message: (message, its content or None, rev2) -> value."""


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """One FETCH command's attributes, worked out once for all the messages it names: their
    order and names, what each one's value is made from, and what content they need. A FETCH
    of a thousand messages otherwise spends more time deciding these again per message than
    writing the answers."""

    attributes: tuple[FetchAttribute, ...]  # in response order, each response name once
    steps: tuple[tuple[Atom, Step], ...]  # per attribute: its name and how to make its value
    need: Need
    whole_only: bool  # every content attribute is the whole message (BODY[], RFC822)

    async def items(self, message: StoredMessage, *, cache: MessageContentCache, store: MailStore,
                    rev2: bool = False) -> tuple[Value, ...]:
        """The flat name/value list inside "* n FETCH (...)" for `message` (see `fetch_items`)."""
        need = self.need
        content: ParsedMessage | None = None
        if need:
            if self.whole_only and message.size > STREAM_THRESHOLD:
                return self._streamed(message, store)
            content = cache.cached(message.blob_id, size=message.size)
            if content is None or (need is Need.TREE and not content.parsed):
                content = await _load(need, message, cache, store)
        items: list[Value] = []
        for name, step in self.steps:
            items.append(name)
            items.append(step(message, content, rev2))
        return tuple(items)

    def _streamed(self, message: StoredMessage, store: MailStore) -> tuple[Value, ...]:
        """A large message of which only whole-message bodies are asked is streamed from the
        store without being loaded."""
        items: list[Value] = []
        for (name, step), attribute in zip(self.steps, self.attributes, strict=True):
            items.append(name)
            items.append(step(message, None, False) if attribute in _ROW_ITEMS
                         else _blob_value(store, message, attribute))
        return tuple(items)


    def loads_whole(self, message: StoredMessage) -> bool:
        """Whether `items` would load `message`'s whole content through the cache (not stream it
        from the store, not read its header alone)."""
        need = self.need
        if not need:
            return False
        if self.whole_only and message.size > STREAM_THRESHOLD:
            return False
        return not (need is Need.HEADER and message.size > HEADER_ONLY_MIN)


# Octets of message content read in one round trip by `prefetch` (our choice: a few MB keeps
# the round trips few and the content cache's working set small).
PREFETCH_BYTES = 4 * 1024 * 1024


async def prefetch(plan: FetchPlan, targets: Sequence[tuple[int, StoredMessage]], start: int, *,
                   cache: MessageContentCache, store: MailboxStore, mailbox_id: MailboxId) -> int:
    """Reads into the cache, in one storage read, the content of targets[start] and of the
    targets after it that follow it in the mailbox (consecutive sequence numbers: their UID
    range holds nothing else), up to PREFETCH_BYTES, when the plan would load them one by one
    and they are not in memory: a client's first FETCH of a mailbox's headers otherwise costs a
    storage round trip per message. Content stored in spool files is left to the usual path.
    Returns the index of the first target not considered (the caller tries again from there)."""
    run: list[StoredMessage] = []
    total = 0
    previous = targets[start][0] - 1
    for seq, message in targets[start:]:
        if (seq != previous + 1 or total + message.size > PREFETCH_BYTES
                or not plan.loads_whole(message) or not cache.keeps(message.size)
                or cache.holds(message.blob_id, message.size)):
            break
        run.append(message)
        total += message.size
        previous = seq
    if len(run) < 2:
        return start + 1  # one message: the usual path reads it just as fast
    contents = await store.message_contents(mailbox_id, run[0].uid, run[-1].uid)
    cache.put_batch((message.blob_id, data) for message in run
                    if isinstance(data := contents.get(message.uid), bytes) and len(data) == message.size)
    return start + len(run)


def plan_fetch(attributes: Sequence[FetchAttribute], *, include_uid: bool = False,
               include_modseq: bool = False) -> FetchPlan:
    """The plan for `attributes`: UID first when asked or `include_uid` (UID FETCH, RFC 3501
    6.4.8), then MODSEQ when asked or `include_modseq` (CONDSTORE enabled, RFC 7162 3.1.4),
    then the other attributes in the order requested; an attribute asked twice is answered once."""
    ordered = tuple(_ordered(attributes, include_uid=include_uid, include_modseq=include_modseq))
    content = [a for a in ordered if a not in _ROW_ITEMS]
    return FetchPlan(
        attributes=ordered,
        steps=tuple((Atom(fetch_item_name(a)), _step(a)) for a in ordered),
        need=max((_need(a) for a in content), default=Need.NOTHING),
        whole_only=bool(content) and all(_is_whole_body(a) for a in content),
    )


async def fetch_items(message: StoredMessage, attributes: Sequence[FetchAttribute], *,
                      cache: MessageContentCache, store: MailStore, rev2: bool = False,
                      include_uid: bool = False, include_modseq: bool = False) -> tuple[Value, ...]:
    """The flat name/value list inside "* n FETCH (...)" for `message` (FETCH of one message;
    a command over many makes its `plan_fetch` once and calls `FetchPlan.items`).

    The order of the items is `plan_fetch`'s. FLAGS are `message.flags`: the caller passes the
    message as it is after any implicit \\Seen.

    `rev2` is whether the client enabled IMAP4rev2: its BODYSTRUCTURE then describes a
    message/global part like message/rfc822 (RFC 9051 9 body-type-msg). How strings go on the
    wire (quoted, UTF-8 or literal) is the serializer's choice for the connection's mode.
    Raises NotFound when the message's content is gone (expunged meanwhile), UnknownCte for
    BINARY of an unknown encoding.
    """
    plan = plan_fetch(attributes, include_uid=include_uid, include_modseq=include_modseq)
    return await plan.items(message, cache=cache, store=store, rev2=rev2)


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


def _need(attribute: FetchAttribute) -> Need:
    if attribute in (FetchItem.ENVELOPE, FetchItem.RFC822_HEADER):
        return Need.HEADER
    if attribute in (FetchItem.RFC822, FetchItem.RFC822_TEXT):
        return Need.OCTETS
    if isinstance(attribute, BodySection) and not attribute.section.part:
        text = attribute.section.text
        if text in _HEADER_TEXTS:
            return Need.HEADER
        if text in (None, "", "TEXT", "MIME"):
            return Need.OCTETS  # MIME of the message itself is empty (RFC 3501 6.4.5)
    return Need.TREE  # BODYSTRUCTURE, BODY, part sections, BINARY[.SIZE]


async def _load(need: Need, message: StoredMessage, cache: MessageContentCache,
                store: MailStore) -> ParsedMessage:
    if need is Need.HEADER and message.size > HEADER_ONLY_MIN:
        return await cache.get_header(store, message.blob_id, size=message.size)
    if need is Need.TREE:
        return await cache.get(store, message.blob_id, size=message.size)
    return await cache.get_raw(store, message.blob_id, size=message.size)


# Row items -------------------------------------------------------------------------------------

# FLAGS lists are a small vocabulary shared by most messages ("()", "(\Seen)"...): one value per
# distinct set, made once. Cleared when full, so unusual keyword sets cannot grow it unbounded.
_FLAG_LISTS_MAX = 1024
_flag_lists: dict[frozenset[str], ParenList] = {}


def flags_value(flags: frozenset[str]) -> ParenList:
    """The FLAGS value, e.g. (\\Flagged \\Seen): the flags sorted. No \\Recent: the store does not
    track it (RFC 3501 2.3.2 lets a server not do so)."""
    value = _flag_lists.get(flags)
    if value is None:
        if len(_flag_lists) >= _FLAG_LISTS_MAX:
            _flag_lists.clear()
        value = _flag_lists[flags] = ParenList(tuple(Flag(f) for f in sorted(flags)))
    return value


def _uid(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
    return message.uid


def _flags(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
    return flags_value(message.flags)


def _size(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
    return message.size


def _internal_date(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
    return DateTime(message.internal_date)


def _modseq(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
    return ParenList((message.modseq,))  # RFC 7162 3.1.4: "MODSEQ (n)"


_ROW_STEPS: dict[FetchAttribute, Step] = {
    FetchItem.UID: _uid, FetchItem.FLAGS: _flags, FetchItem.RFC822_SIZE: _size,
    FetchItem.INTERNALDATE: _internal_date, FetchItem.MODSEQ: _modseq,
}


# Content items ---------------------------------------------------------------------------------


def _step(attribute: FetchAttribute) -> Step:
    """How `attribute`'s value is made (see `Step`)."""
    row = _ROW_STEPS.get(attribute)
    if row is not None:
        return row
    if isinstance(attribute, BodySection) and not attribute.section.part:
        return _top_section_step(attribute)

    def step(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
        assert content is not None  # the plan's `need` loaded it
        return _content_value(content, attribute, rev2)
    return step


def _top_section_step(attribute: BodySection) -> Step:
    """BODY[...] of the message itself: cut from its octets at the end of its header, without
    its MIME tree (what mail clients ask most: BODY.PEEK[HEADER], BODY.PEEK[HEADER.FIELDS (...)],
    BODY.PEEK[])."""
    section, window = attribute.section, attribute.partial
    text = (section.text or "").upper()
    names = [name.encode("utf-8", "replace") for name in section.fields]
    exclude = text == "HEADER.FIELDS.NOT"

    def step(message: StoredMessage, content: ParsedMessage | None, rev2: bool) -> Value:
        assert content is not None  # the plan's `need` loaded it
        if text == "HEADER":
            data = content.header
        elif text == "TEXT":
            data = content.body
        elif text == "":
            data = content.raw
        elif text == "MIME":
            data = b""  # RFC 3501 6.4.5: MIME needs a part number; message.imap_fetch agrees
        else:
            data = _header_fields(content, names, exclude=exclude)
        return _body_value(_cut(data, window))
    return step


def _header_fields(content: ParsedMessage, names: list[bytes], *, exclude: bool) -> bytes:
    """HEADER.FIELDS[.NOT] of the message: as `message.imap_fetch.header_fields` makes them for
    the root part (the fields in their original order and folding, then the empty line)."""
    fields = select_fields(content.raw, names, 0, content.header_size, exclude=exclude)
    if fields and not fields.endswith(b"\n"):
        fields += b"\r\n"  # the last line of a message that is all header
    return fields + b"\r\n"


def _content_value(content: ParsedMessage, attribute: FetchAttribute, rev2: bool) -> Value:
    raw = content.raw
    if isinstance(attribute, BodySection):
        section = attribute.section
        data = imap_fetch.section_bytes(raw, content.tree, section.part, section.text, section.fields)
        return _body_value(_cut(data, attribute.partial))
    if isinstance(attribute, BinarySection):
        decoded = imap_fetch.binary_section(raw, content.tree, attribute.part)
        if decoded is None:
            raise UnknownCte(f"BINARY[{_part_name(attribute.part)}]: unknown Content-Transfer-Encoding")
        data = _cut(decoded, attribute.partial)
        return _body_value(data, binary=b"\x00" in data)
    if isinstance(attribute, BinarySize):
        size = imap_fetch.binary_size(raw, content.tree, attribute.part)
        if size is None:
            raise UnknownCte(f"BINARY.SIZE[{_part_name(attribute.part)}]: unknown Content-Transfer-Encoding")
        return size
    if attribute is FetchItem.ENVELOPE:
        return response_value(imap_fetch.envelope(content.header))
    if attribute in (FetchItem.BODYSTRUCTURE, FetchItem.BODY):
        structure = imap_fetch.bodystructure(raw, content.tree,
                                             extensible=attribute is FetchItem.BODYSTRUCTURE,
                                             message_global=rev2)
        return response_value(structure)
    if attribute is FetchItem.RFC822:
        return _body_value(raw)
    if attribute is FetchItem.RFC822_HEADER:
        return _body_value(content.header)
    if attribute is FetchItem.RFC822_TEXT:
        return _body_value(content.body)
    raise TypeError(f"not a content item: {attribute!r}")


def _part_name(part: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in part)


def _cut(data: bytes, window: Partial | None) -> bytes:
    """<offset.length> (RFC 3501 6.4.5): past the end gives the empty string."""
    return data if window is None else imap_fetch.partial(data, window.offset, window.length)


def _body_value(data: bytes, *, binary: bool = False) -> Value:
    size = len(data)
    if not size:
        return _EMPTY
    if size > STREAM_THRESHOLD:
        return StreamedLiteral(size, BytesSource(data), binary)
    return Literal(data, binary)


_EMPTY = String(b"")


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


def _is_whole_body(attribute: FetchAttribute) -> bool:
    """BODY[] / BODY.PEEK[] (with or without a partial) and RFC822: the message as stored."""
    return attribute is FetchItem.RFC822 or (
        isinstance(attribute, BodySection) and attribute.section == _WHOLE)


def _blob_value(store: MailStore, message: StoredMessage, attribute: FetchAttribute) -> Value:
    offset, size = 0, message.size
    if isinstance(attribute, BodySection) and attribute.partial is not None:
        offset = attribute.partial.offset
        size = max(0, min(attribute.partial.length, message.size - offset))
    if size == 0:
        return String(b"")
    return StreamedLiteral(size, BlobSource(store, message.blob_id, offset, size))
