"""The FETCH fast paths against a real SQLite store: sections of the message itself cut at the
end of its header without a MIME tree (checked, for generated messages, against the tree-based
reference `message.imap_fetch.section_bytes`), the tree parsed only for what needs it, the
batch read of a cold mailbox, and what the serializer does with large literals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.ids import BlobId, MailboxId
from mailprime.domain.mail import StoredMessage
from mailprime.message import imap_fetch
from mailprime.message.mime_tree import parse_message
from mailprime.proto.imap.serializer import serialize
from mailprime.proto.imap.types import (
    Atom,
    BodySection,
    FetchAttribute,
    FetchItem,
    Literal,
    ParenList,
    Partial,
    Section,
    StreamedLiteral,
    String,
    Untagged,
    Value,
)
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.fetch import (
    PREFETCH_BYTES,
    Need,
    fetch_items,
    plan_fetch,
    prefetch,
)
from mailprime.storage.sql import SqlStore, open_store

HEADER = b"From: a@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n\r\n"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@asynccontextmanager
async def mailbox(tmp: Path, *, inline_max: int = 64 * 1024) -> AsyncIterator[tuple[SqlStore, MailboxId]]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=inline_max)
    try:
        account = await store.add_account("bob@example.com", "x")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        yield store, box.id
    finally:
        await store.close()


def peek(text: str | None = None, fields: tuple[str, ...] = (),
         partial: Partial | None = None) -> BodySection:
    return BodySection(Section(text=text, fields=fields), partial, peek=True)


def reference(raw: bytes, attribute: FetchAttribute) -> bytes:
    """What the tree-based path of message.imap_fetch gives for `attribute`."""
    tree = parse_message(raw)
    if attribute is FetchItem.RFC822:
        return raw
    if attribute is FetchItem.RFC822_HEADER:
        return tree.header(raw)
    if attribute is FetchItem.RFC822_TEXT:
        return imap_fetch.section_bytes(raw, tree, (), "TEXT")
    assert isinstance(attribute, BodySection)
    section = attribute.section
    data = imap_fetch.section_bytes(raw, tree, section.part, section.text, section.fields)
    window = attribute.partial
    return data if window is None else imap_fetch.partial(data, window.offset, window.length)


def octets(value: Value) -> bytes:
    if isinstance(value, Literal):
        return value.data
    assert value == String(b""), value
    return b""


# Sections of the message itself, without its MIME tree ----------------------------------------

_LINE = st.sampled_from([b"Subject: hi", b"subject: again", b"From: a@example.org", b"X-Odd:x",
                         b"To: b@example.org,", b" c@example.org", b"\tfolded", b"not a field",
                         b"Content-Type: multipart/mixed; boundary=B", b"MIME-Version: 1.0",
                         b"", b"--B", b"--B--", b"body line", b".", b"Subject"])
_ENDING = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_LINE, max_size=14))
    ending = draw(_ENDING)
    raw = ending.join(lines)
    return raw + ending if draw(st.booleans()) else raw


_NAMES = st.lists(st.sampled_from(["Subject", "SUBJECT", "from", "To", "X-Odd", "Content-Type",
                                   "Nope"]), min_size=1, max_size=3).map(tuple)
_PARTIALS = st.one_of(st.none(), st.builds(Partial, st.integers(0, 80), st.integers(0, 80)))
_ATTRIBUTES = st.one_of(
    st.builds(peek, st.sampled_from([None, "HEADER", "TEXT", "MIME"]), st.just(()), _PARTIALS),
    st.builds(peek, st.sampled_from(["HEADER.FIELDS", "HEADER.FIELDS.NOT"]), _NAMES, _PARTIALS),
    st.sampled_from([FetchItem.RFC822, FetchItem.RFC822_HEADER, FetchItem.RFC822_TEXT]),
)


@settings(max_examples=400, deadline=None)
@given(_messages(), st.lists(_ATTRIBUTES, min_size=1, max_size=4))
def test_top_level_sections_are_what_the_mime_tree_gives(raw: bytes,
                                                        attributes: list[FetchAttribute]) -> None:
    """Whatever the message (CRLF or bare LF, no empty line, all header, multipart), the octets
    cut at the end of its header are those the tree-based reference finds, and the tree is never
    parsed for them."""
    async def scenario() -> None:
        cache = MessageContentCache()
        cache.put_batch([(BlobId(1), raw)])
        message = StoredMessage(MailboxId(1), 1, BlobId(1), len(raw), _WHEN, frozenset())
        plan = plan_fetch(attributes)
        assert plan.need in (Need.HEADER, Need.OCTETS)
        items = await plan.items(message, cache=cache, store=_NO_STORE)
        for attribute, (name, value) in zip(plan.attributes, zip(items[::2], items[1::2], strict=True),
                                            strict=True):
            assert isinstance(name, Atom)
            assert octets(value) == reference(raw, attribute), (name, raw)
        content = cache.cached(BlobId(1), size=len(raw))
        assert content is not None
        assert not content.parsed
    run(scenario())


class _Unreachable:
    """Where a store must be passed but must never be reached (every content is in the cache):
    any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used ({name})")


_NO_STORE: Any = _Unreachable()
_WHEN = datetime(2024, 1, 2, tzinfo=UTC)


def test_what_each_attribute_needs() -> None:
    assert plan_fetch((FetchItem.UID, FetchItem.FLAGS, FetchItem.RFC822_SIZE)).need is Need.NOTHING
    assert plan_fetch((FetchItem.FLAGS, peek("HEADER"))).need is Need.HEADER
    assert plan_fetch((FetchItem.ENVELOPE, peek("HEADER.FIELDS", ("A",)))).need is Need.HEADER
    assert plan_fetch((peek("HEADER"), peek())).need is Need.OCTETS
    assert plan_fetch((FetchItem.RFC822_TEXT,)).need is Need.OCTETS
    assert plan_fetch((peek("HEADER"), FetchItem.BODYSTRUCTURE)).need is Need.TREE
    assert plan_fetch((BodySection(Section((1,))),)).need is Need.TREE
    whole = plan_fetch((FetchItem.UID, peek(), FetchItem.RFC822))
    assert whole.whole_only and whole.need is Need.OCTETS
    assert not plan_fetch((peek(), peek("TEXT"))).whole_only
    # Order and names: UID first (UID FETCH), each response name once.
    plan = plan_fetch((FetchItem.FLAGS, peek("HEADER"), BodySection(Section(text="HEADER"))),
                      include_uid=True)
    assert [name for name, _ in plan.steps] == [Atom("UID"), Atom("FLAGS"), Atom("BODY[HEADER]")]


def test_the_tree_is_parsed_only_when_asked_for_and_then_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = (HEADER.replace(b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\r\n"
                                  b"Content-Type: multipart/mixed; boundary=B\r\n")
                   + b"--B\r\n\r\none\r\n--B\r\n\r\ntwo\r\n--B--\r\n")
            message = await store.append_message(box, raw)
            cache = MessageContentCache()
            await fetch_items(message, (FetchItem.FLAGS, peek("HEADER"), peek()), cache=cache, store=store)
            content = cache.cached(message.blob_id, size=message.size)
            assert content is not None and not content.parsed
            before = cache.cached_bytes
            items = await fetch_items(message, (FetchItem.BODYSTRUCTURE, BodySection(Section((2,)))),
                                      cache=cache, store=store)
            assert content.parsed and cache.loads == 1  # the same entry, its tree made once
            assert items[-1] == Literal(b"two")
            assert cache.cached_bytes > before  # its parts are counted now
    run(scenario())


# A cold mailbox: one storage read for many messages ------------------------------------------


def test_a_cold_header_listing_reads_the_messages_in_one_go(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            stored = [await store.append_message(box, HEADER + b"body %d\r\n" % i) for i in range(30)]
            cache = MessageContentCache()
            plan = plan_fetch((FetchItem.FLAGS, peek("HEADER")), include_uid=True)
            targets = [(seq, m) for seq, m in enumerate(stored, start=1)]
            assert await prefetch(plan, targets, 0, cache=cache, store=store, mailbox_id=box) == 30
            assert (cache.batch_loads, cache.loads, len(cache)) == (1, 30, 30)
            for _, message in targets:
                items = await plan.items(message, cache=cache, store=store)
                assert items[-1] == Literal(HEADER)
            assert cache.loads == 30  # all answered from memory
            # Already cached: nothing more to read.
            assert await prefetch(plan, targets, 0, cache=cache, store=store, mailbox_id=box) == 1
            assert cache.batch_loads == 1
    run(scenario())


def test_prefetch_takes_only_neighbours_and_what_the_plan_would_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, inline_max=1024) as (store, box):
            small = [await store.append_message(box, HEADER + b"x\r\n") for _ in range(3)]
            spooled = await store.append_message(box, HEADER + b"y" * 5000 + b"\r\n")  # in a spool file
            rest = [await store.append_message(box, HEADER + b"z\r\n") for _ in range(2)]
            messages = [*small, spooled, *rest]
            numbered = list(enumerate(messages, start=1))
            cache = MessageContentCache()
            headers = plan_fetch((peek("HEADER"),))
            # Sequence numbers 1, 3: not neighbours, so no batch (each is read on its own).
            apart = [numbered[0], numbered[2]]
            assert await prefetch(headers, apart, 0, cache=cache, store=store, mailbox_id=box) == 1
            assert cache.batch_loads == 0
            # Row items only: nothing to load at all.
            flags = plan_fetch((FetchItem.FLAGS,))
            assert await prefetch(flags, numbered, 0, cache=cache, store=store, mailbox_id=box) == 1
            # A run with a message in a spool file: the inline ones are batched, the spooled one
            # is left to the usual path, and every answer is right.
            assert await prefetch(headers, numbered, 0, cache=cache, store=store, mailbox_id=box) == 6
            assert (cache.batch_loads, cache.loads) == (1, 5)
            assert not cache.holds(spooled.blob_id, spooled.size)
            for message in messages:
                assert (await headers.items(message, cache=cache, store=store))[-1] == Literal(HEADER)
            assert cache.loads == 6
    run(scenario())


def test_prefetch_reads_at_most_its_octet_budget_per_round_trip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, inline_max=200 * 1024) as (store, box):
            size = 100 * 1024
            count = PREFETCH_BYTES // size + 5
            body = b"b" * (size - len(HEADER))
            stored = [await store.append_message(box, HEADER + body) for _ in range(count)]
            cache = MessageContentCache()
            plan = plan_fetch((peek(),))
            numbered = list(enumerate(stored, start=1))
            first = await prefetch(plan, numbered, 0, cache=cache, store=store, mailbox_id=box)
            assert first == PREFETCH_BYTES // size
            assert await prefetch(plan, numbered, first, cache=cache, store=store, mailbox_id=box) == count
            assert (cache.batch_loads, cache.loads) == (2, count)
    run(scenario())


# The serializer hands large literals over uncopied ----------------------------------------------


def test_large_literals_are_their_own_segment_and_the_same_object() -> None:
    header = b"Subject: x\r\n" * 200 + b"\r\n"
    small = b"Subject: y\r\n\r\n"
    response = Untagged((7, Atom("FETCH"), ParenList((Atom("UID"), 9, Atom("BODY[HEADER]"), Literal(header),
                                                      Atom("X"), Literal(small)))))
    segments = serialize(response)
    assert segments == [b"* 7 FETCH (UID 9 BODY[HEADER] {%d}\r\n" % len(header), header,
                        b" X {%d}\r\n%s)\r\n" % (len(small), small)]
    assert segments[1] is header
    streamed = StreamedLiteral(5, object())
    segments = serialize(Untagged((1, Atom("FETCH"), ParenList((Atom("A"), Literal(header), Atom("B"),
                                                                streamed)))))
    assert segments == [b"* 1 FETCH (A {%d}\r\n" % len(header), header, b" B {5}\r\n", streamed, b")\r\n"]
