"""Content of messages this process just accepted, kept in memory for their first delivery.

Why: a message accepted for a remote recipient is usually delivered within milliseconds by the
same process; reading it back from the database right after writing it cost about a third of
the relay path's time (py-spy: SQLite read transactions per job). The cache is keyed by queue id
(never reused, unlike blob row ids), holds only small messages (bytes already in memory), and is
bounded in total size: the oldest entries go first. A miss (another process accepted it, it was
evicted, or the process restarted) simply reads from the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator

from mailprime.domain.ids import QueueId

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
CHUNK = 64 * 1024


class MemoryBlob:
    """A storage.ports.BlobReader over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    async def _chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self._data)
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])

    def chunks(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def read_head(self, limit: int) -> bytes:
        return self._data[:limit]


class RecentContent:
    """A bounded LRU of queue id -> content; safe to share between the tasks of one process."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[QueueId, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, queue_id: QueueId, content: bytes) -> None:
        if len(content) > self.max_bytes // 8:
            return  # a big message would flush everything else; it streams from the spool
        with self._lock:
            old = self._items.pop(queue_id, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[queue_id] = content
            self._bytes += len(content)
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    def get(self, queue_id: QueueId) -> MemoryBlob | None:
        with self._lock:
            content = self._items.get(queue_id)
            if content is None:
                self.misses += 1
                return None
            self._items.move_to_end(queue_id)
            self.hits += 1
            return MemoryBlob(content)

    def discard(self, queue_id: QueueId) -> None:
        with self._lock:
            old = self._items.pop(queue_id, None)
            if old is not None:
                self._bytes -= len(old)
