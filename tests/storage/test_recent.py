"""The in-memory cache of just-accepted content: bounded, LRU, keyed by queue id."""

from __future__ import annotations

import asyncio

from mailprime.domain.ids import QueueId
from mailprime.storage.recent import RecentContent


def test_hit_returns_the_same_bytes_in_chunks() -> None:
    recent = RecentContent(max_bytes=4 << 20)
    data = bytes(range(256)) * 1000  # 256 000 bytes: several chunks
    recent.put(QueueId("Q1"), data)
    blob = recent.get(QueueId("Q1"))
    assert blob is not None and blob.size == len(data)

    async def read() -> bytes:
        return b"".join([c async for c in blob.chunks()])

    assert asyncio.run(read()) == data
    assert asyncio.run(read()) == data  # each pass starts anew
    assert asyncio.run(blob.read_head(10)) == data[:10]
    assert recent.get(QueueId("Q2")) is None
    assert (recent.hits, recent.misses) == (1, 1)


def test_bounded_by_bytes_oldest_evicted_first() -> None:
    recent = RecentContent(max_bytes=8_000)
    for i in range(10):
        recent.put(QueueId(f"Q{i}"), b"x" * 1000)
    assert recent.get(QueueId("Q0")) is None and recent.get(QueueId("Q1")) is None
    assert recent.get(QueueId("Q9")) is not None
    recent.discard(QueueId("Q9"))
    assert recent.get(QueueId("Q9")) is None


def test_a_message_larger_than_an_eighth_is_not_cached() -> None:
    recent = RecentContent(max_bytes=8_000)
    recent.put(QueueId("small"), b"s" * 100)
    recent.put(QueueId("big"), b"b" * 2_000)
    assert recent.get(QueueId("big")) is None
    assert recent.get(QueueId("small")) is not None
