"""Message content for FETCH and SEARCH: the octets of a stored message and its MIME tree, kept
in one process-wide LRU so that the FETCH of ENVELOPE, then BODYSTRUCTURE, then BODY[1] (which
clients send as separate commands) reads and parses the message once, and the headers a client
lists a mailbox with are served from memory to every session that asks (contents never change).

Sessions of different accounts share the cache safely: it is keyed by blob id, and a session can
only name the blob ids of its own mailbox rows.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Iterable

from mailprime.domain.ids import BlobId
from mailprime.message.header_lexer import header_end
from mailprime.message.mime_tree import MimePart, parse_message
from mailprime.storage.ports import MailStore

# Bounds of the cache (our choice; no RFC sets them): total octets and entries held, and the
# largest message worth keeping (bigger ones are parsed for the request at hand, then dropped,
# so that one 50 MB message does not evict every other session's working set).
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_ENTRY_BYTES = 8 * 1024 * 1024
# Messages above this size are parsed on a worker thread: the parse is pure Python and a large
# message would otherwise hold the event loop (every other session) for tens of milliseconds.
PARSE_OFF_LOOP_BYTES = 1024 * 1024
# Rough cost of one parsed part beyond the message octets, for the octet bound.
_PART_OVERHEAD = 512
# Messages above this size of which only the header section is needed (FETCH ENVELOPE,
# BODY[HEADER...], RFC822.HEADER: what mail clients ask to list a mailbox; SEARCH FROM, SUBJECT,
# HEADER, SENT*) have only their header read, through `get_header`. Smaller ones are loaded
# whole and cached, since the next command often wants their body or structure.
HEADER_ONLY_MIN = 128 * 1024
# How much of a message `get_header` reads to find the end of its header section. RFC 5322 sets
# no limit on a header; real ones are a few kilobytes, so a header longer than this (rare) makes
# `get_header` load the whole message instead.
HEADER_READ_LIMIT = 64 * 1024
_BLANK_LINE = re.compile(rb"\n\r?\n")


class ParsedMessage:
    """A message's octets as stored, where its header section ends, and its MIME tree (offsets
    into `raw`), parsed only when first asked for.

    Not a frozen value because of that one lazy field: most FETCHes (a mail client listing a
    mailbox: BODY.PEEK[HEADER], RFC822.SIZE, FLAGS; or BODY.PEEK[] for a whole message) need
    only the octets and the end of the header, and parsing the MIME structure of every message
    of a mailbox would cost more than everything else they do. `MessageContentCache.get` hands
    out entries with the tree parsed (off the event loop when the message is large); `get_raw`
    leaves that to whoever needs it.
    """

    __slots__ = ("_header", "_tree", "header_size", "raw", "size")

    def __init__(self, raw: bytes, tree: MimePart | None = None) -> None:
        self.raw = raw
        self.size = len(raw)
        self._tree = tree
        # As mime_tree finds it: after the first empty line, or everything when there is none.
        self.header_size = tree.body_start if tree is not None else header_end(raw)
        self._header: bytes | None = None

    @property
    def tree(self) -> MimePart:
        return self._tree if self._tree is not None else self.parse_tree()

    def parse_tree(self) -> MimePart:
        """Parses the MIME tree now (once; any thread: two racing parses make equal trees)."""
        if self._tree is None:
            self._tree = parse_message(self.raw)
        return self._tree

    @property
    def parsed(self) -> bool:
        """Whether the MIME tree is there already (`tree` costs nothing)."""
        return self._tree is not None

    @property
    def header(self) -> bytes:
        """The header section, the empty line that ends it included (cut once: every session
        listing the mailbox sends it, as the same bytes object)."""
        if self._header is None:
            self._header = self.raw if self.header_size == self.size else self.raw[:self.header_size]
        return self._header

    @property
    def body(self) -> bytes:
        """Everything after the header section (RFC 3501 6.4.5 TEXT of the message)."""
        return self.raw[self.header_size:]


class MessageContentCache:
    """An LRU of message contents keyed by blob id, bounded by total octets and entry count.

    An entry costs its octets, those of its header section (kept apart once asked for), plus
    `_PART_OVERHEAD` per MIME part once its tree is parsed (one part until then). `loads`
    counts messages read from the store, `hits` requests answered from memory: tests use them
    to check that a search reads only the messages it must.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._entries: OrderedDict[BlobId, tuple[ParsedMessage, int]] = OrderedDict()
        self._bytes = 0
        self.loads = 0
        self.hits = 0
        self.header_loads = 0
        self.batch_loads = 0  # storage round trips of `put_batch` (each loads many messages)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def cached(self, blob_id: BlobId, *, size: int | None = None) -> ParsedMessage | None:
        """The entry for `blob_id` if it is in memory (no I/O, so no suspension: a FETCH of many
        cached messages runs straight through), else None. `size` as in `get`."""
        entry = self._entries.get(blob_id)
        if entry is None or (size is not None and entry[0].size != size):
            return None
        self._entries.move_to_end(blob_id)
        self.hits += 1
        return entry[0]

    async def get(self, store: MailStore, blob_id: BlobId, *, size: int | None = None) -> ParsedMessage:
        """The content of `blob_id` with its MIME tree parsed. Raises NotFound if the store no
        longer has it.

        `size`, when given, is the size the mailbox row records: an entry of another size is
        stale and is reloaded. That guards against a blob id reused by the store for new
        content after the old content was released (SQLite reuses the highest rowid once it is
        deleted); it cannot tell same-sized contents apart, which is why the store must never
        reuse blob ids.
        """
        content = await self.get_raw(store, blob_id, size=size)
        if not content.parsed:
            if content.size > PARSE_OFF_LOOP_BYTES:
                await asyncio.to_thread(content.parse_tree)
            else:
                content.parse_tree()
            self._reweigh(blob_id, content)
        return content

    async def get_raw(self, store: MailStore, blob_id: BlobId, *, size: int | None = None
                      ) -> ParsedMessage:
        """Like `get`, but the MIME tree may not be parsed yet: for what needs only the octets
        and the end of the header (whole-message and top-level sections, RFC822.SIZE aside)."""
        content = self.cached(blob_id, size=size)
        if content is not None:
            return content
        raw = await store.read_blob(blob_id)
        self.loads += 1
        content = ParsedMessage(raw)
        self._remember(blob_id, content)
        return content

    async def get_header(self, store: MailStore, blob_id: BlobId, *, size: int | None = None
                         ) -> ParsedMessage:
        """A message with at least its whole header section, for attributes that need nothing
        else (ENVELOPE, BODY[HEADER...], RFC822.HEADER): the cached full message if there is one,
        else only the first octets up to the empty line that ends the header, read from the
        store without the body (a client listing a mailbox never pulls a 50 MB attachment
        through memory). Such a partial result is not cached. Raises NotFound."""
        content = self.cached(blob_id, size=size)
        if content is not None:
            return content
        async with store.open_blob(blob_id) as blob:
            head = await blob.read_head(HEADER_READ_LIMIT)
            whole = len(head) >= blob.size
        end = _header_end(head)
        if whole or end is None:
            return await self.get(store, blob_id, size=size)
        self.header_loads += 1
        return ParsedMessage(head[:end])

    def holds(self, blob_id: BlobId, size: int) -> bool:
        """Whether `blob_id`'s content of `size` octets is in memory (no LRU move, no count)."""
        entry = self._entries.get(blob_id)
        return entry is not None and entry[0].size == size

    def keeps(self, size: int) -> bool:
        """Whether a message of `size` octets would be kept once loaded."""
        return size <= self.max_entry_bytes

    def put_batch(self, contents: Iterable[tuple[BlobId, bytes]]) -> None:
        """Contents the caller read in one storage round trip (`fetch.prefetch`), for the
        requests to come."""
        self.batch_loads += 1
        for blob_id, raw in contents:
            self.loads += 1
            self._remember(blob_id, ParsedMessage(raw))

    def _remember(self, blob_id: BlobId, content: ParsedMessage) -> None:
        if content.size > self.max_entry_bytes:
            return
        old = self._entries.pop(blob_id, None)  # another coroutine loaded it meanwhile
        if old is not None:
            self._bytes -= old[1]
        cost = _cost(content)
        self._entries[blob_id] = (content, cost)
        self._bytes += cost
        self._evict()

    def _reweigh(self, blob_id: BlobId, content: ParsedMessage) -> None:
        """Counts the parts of a tree parsed after the entry was made."""
        entry = self._entries.get(blob_id)
        if entry is None or entry[0] is not content:
            return
        cost = _cost(content)
        self._entries[blob_id] = (content, cost)
        self._bytes += cost - entry[1]
        self._evict()

    def _evict(self) -> None:
        while self._entries and (self._bytes > self.max_bytes or len(self._entries) > self.max_entries):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def forget(self, blob_id: BlobId) -> None:
        """Drops one entry (e.g. after its last mailbox row was expunged); harmless if absent."""
        entry = self._entries.pop(blob_id, None)
        if entry is not None:
            self._bytes -= entry[1]


def _cost(content: ParsedMessage) -> int:
    """Its octets, those of its header again (`header` keeps a copy once asked), and the parts."""
    parts = _count_parts(content.tree) if content.parsed else 1
    return content.size + content.header_size + _PART_OVERHEAD * parts


def _header_end(head: bytes) -> int | None:
    """Where the body starts (after the empty line), as mime_tree finds it; None: not in `head`."""
    if head.startswith(b"\r\n"):
        return 2
    if head.startswith(b"\n"):
        return 1
    blank = _BLANK_LINE.search(head)
    return blank.end() if blank else None


def _count_parts(tree: MimePart) -> int:
    count = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.parts)
    return count
