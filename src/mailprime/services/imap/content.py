"""Message content for FETCH and SEARCH: the octets of a stored message and its MIME tree, kept
in one process-wide LRU so that the FETCH of ENVELOPE, then BODYSTRUCTURE, then BODY[1] (which
clients send as separate commands) reads and parses the message once.

Sessions of different accounts share the cache safely: it is keyed by blob id, and a session can
only name the blob ids of its own mailbox rows.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass

from mailprime.domain.ids import BlobId
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


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A message's octets as stored, its MIME tree (offsets into `raw`) and its header section
    (the empty line that ends it included)."""

    raw: bytes
    tree: MimePart

    @property
    def header(self) -> bytes:
        return self.tree.header(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)


def parse(raw: bytes) -> ParsedMessage:
    return ParsedMessage(raw, parse_message(raw))


class MessageContentCache:
    """An LRU of parsed messages keyed by blob id, bounded by total octets and entry count.

    `loads` counts messages read from the store, `hits` requests answered from memory: tests
    use them to check that a search reads only the messages it must.
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

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    async def get(self, store: MailStore, blob_id: BlobId, *, size: int | None = None) -> ParsedMessage:
        """The parsed content of `blob_id`. Raises NotFound if the store no longer has it.

        `size`, when given, is the size the mailbox row records: an entry of another size is
        stale and is reloaded. That guards against a blob id reused by the store for new
        content after the old content was released (SQLite reuses the highest rowid once it is
        deleted); it cannot tell same-sized contents apart, which is why the store must never
        reuse blob ids.
        """
        entry = self._entries.get(blob_id)
        if entry is not None and (size is None or entry[0].size == size):
            self._entries.move_to_end(blob_id)
            self.hits += 1
            return entry[0]
        raw = await store.read_blob(blob_id)
        self.loads += 1
        if len(raw) > PARSE_OFF_LOOP_BYTES:
            parsed = await asyncio.to_thread(parse, raw)
        else:
            parsed = parse(raw)
        self._remember(blob_id, parsed)
        return parsed

    async def get_header(self, store: MailStore, blob_id: BlobId, *, size: int | None = None
                         ) -> ParsedMessage:
        """A message with at least its whole header section, for attributes that need nothing
        else (ENVELOPE, BODY[HEADER...], RFC822.HEADER): the cached full message if there is one,
        else only the first octets up to the empty line that ends the header, read from the
        store without the body (a client listing a mailbox never pulls a 50 MB attachment
        through memory). Such a partial result is not cached. Raises NotFound."""
        entry = self._entries.get(blob_id)
        if entry is not None and (size is None or entry[0].size == size):
            self._entries.move_to_end(blob_id)
            self.hits += 1
            return entry[0]
        async with store.open_blob(blob_id) as blob:
            head = await blob.read_head(HEADER_READ_LIMIT)
            whole = len(head) >= blob.size
        end = _header_end(head)
        if whole or end is None:
            return await self.get(store, blob_id, size=size)
        self.header_loads += 1
        return parse(head[:end])

    def _remember(self, blob_id: BlobId, parsed: ParsedMessage) -> None:
        if parsed.size > self.max_entry_bytes:
            return
        cost = parsed.size + _PART_OVERHEAD * _count_parts(parsed.tree)
        old = self._entries.pop(blob_id, None)  # another coroutine loaded it meanwhile
        if old is not None:
            self._bytes -= old[1]
        self._entries[blob_id] = (parsed, cost)
        self._bytes += cost
        while self._entries and (self._bytes > self.max_bytes or len(self._entries) > self.max_entries):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def forget(self, blob_id: BlobId) -> None:
        """Drops one entry (e.g. after its last mailbox row was expunged); harmless if absent."""
        entry = self._entries.pop(blob_id, None)
        if entry is not None:
            self._bytes -= entry[1]


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
