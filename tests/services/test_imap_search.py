"""SEARCH evaluation against a real SQLite store: every key of RFC 3501 / RFC 9051 6.4.4 (parsed
from the bytes a client sends, by the real protocol core), combinations, sequence and UID sets
with "*", MODSEQ, charset-decoded text; that content is read only for messages the cheap keys
leave undecided; and the ESEARCH values."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mailprime.domain.mail import FlagMode, StoredMessage
from mailprime.proto.imap.server import ServerConnection
from mailprime.proto.imap.types import (
    NEED_DATA,
    Atom,
    CommandReceived,
    LiteralRequest,
    Search,
    SearchAnd,
    SearchKey,
    SearchNot,
    SearchOr,
    State,
)
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.search import compact_set, esearch_values, search
from mailprime.storage.sql import SqlStore, open_store

# Five messages, in UID order (sequence numbers 1..5).
M1 = (b"Date: Thu, 1 Feb 2024 09:00:00 +0000\r\n"
      b"From: Alice Example <alice@example.org>\r\n"
      b"To: bob@example.com\r\n"
      b"Subject: Hello world\r\n"
      b"X-Priority: 1\r\n"
      b"\r\n"
      b"The quick brown fox jumps over the lazy dog.\r\n")
M2 = (b"Date: Fri, 2 Feb 2024 23:30:00 -0800\r\n"  # Feb 3 in UTC; SENT* use the written date
      b"From: Bob <bob@example.com>\r\n"
      b"To: alice@example.org\r\n"
      b"Subject: =?utf-8?q?caf=C3=A9_cr=C3=A8me?=\r\n"
      b"MIME-Version: 1.0\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\n"
      b"Content-Transfer-Encoding: base64\r\n"
      b"\r\n"
      b"w5xuw69jb2RlIHRleHQgaW4gYmFzZTY0Lg==\r\n")  # "Ünïcode text in base64."
M3 = (b"Date: Mon, 5 Feb 2024 12:00:00 +0100\r\n"
      b"From: carol@example.net\r\n"
      b"To: dave@example.net\r\n"
      b"Cc: Erin <erin@example.net>\r\n"
      b"Subject: Report\r\n"
      b"Content-Type: multipart/alternative; boundary=b1\r\n"
      b"\r\n"
      b"--b1\r\n"
      b"Content-Type: text/plain\r\n"
      b"\r\n"
      b"quarterly numbers\r\n"
      b"--b1\r\n"
      b"Content-Type: text/html; charset=iso-8859-1\r\n"
      b"Content-Transfer-Encoding: quoted-printable\r\n"
      b"\r\n"
      b"<p>Gr=FC=DFe</p>\r\n"
      b"--b1--\r\n")
M4 = (b"From: dave@example.net\r\n"  # no Date: header
      b"Bcc: frank@example.org\r\n"
      b"Subject: no date\r\n"
      b"\r\n"
      + b"padding line\r\n" * 400)
M5 = (b"Date: 9 Mar 2024 08:00:00 GMT\r\n"
      b"From: Alice Example <alice@example.org>\r\n"
      b"Subject: Re: Hello world\r\n"
      b"\r\n"
      b"short\r\n")

MESSAGES = (
    (M1, {"\\Seen"}, datetime(2024, 2, 1, 10, 0, tzinfo=UTC)),
    (M2, {"\\Flagged", "$Work"}, datetime(2024, 2, 3, 8, 0, tzinfo=UTC)),
    # 23:30 in New York on Feb 5 is Feb 6 in UTC, the server's zone for INTERNALDATE keys.
    (M3, {"\\Answered", "\\Seen", "\\Deleted"},
     datetime(2024, 2, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5)))),
    (M4, {"\\Draft"}, datetime(2024, 3, 1, 0, 0, tzinfo=UTC)),
    (M5, {"\\Seen", "$work"}, datetime(2024, 3, 9, 9, 0, tzinfo=UTC)),
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Box:
    store: SqlStore
    messages: list[StoredMessage]
    cache: MessageContentCache

    async def find(self, program: str, *, messages: list[StoredMessage] | None = None) -> list[int]:
        return await search(parse(program), self.messages if messages is None else messages,
                            cache=self.cache, store=self.store)


@asynccontextmanager
async def mailbox(tmp: Path, *, gaps: bool = True) -> AsyncIterator[Box]:
    """The five messages; with `gaps`, UIDs 1 3 5 6 7 (a message appended then expunged between
    the others), so that sequence numbers and UIDs differ."""
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=64 * 1024)
    try:
        account = await store.add_account("bob@example.com", "x")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        for i, (raw, flags, when) in enumerate(MESSAGES):
            await store.append_message(box.id, raw, flags=frozenset(flags), internal_date=when)
            if gaps and i < 2:
                gone = await store.append_message(box.id, b"Subject: gone\r\n\r\n",
                                                  flags=frozenset({"\\Deleted"}))
                await store.expunge(box.id, [gone.uid])
        yield Box(store, list(await store.messages(box.id)), MessageContentCache())
    finally:
        await store.close()


def parse(program: str) -> SearchKey:
    """The key of "a SEARCH <program>" as the protocol core parses it (UTF-8 mode on, so quoted
    strings may hold UTF-8; literals are accepted)."""
    conn = ServerConnection()
    conn.set_state(State.SELECTED)
    conn.enable_utf8()
    conn.receive_data(b"a SEARCH " + program.encode() + b"\r\n")
    for _ in range(100):
        event = conn.next_event()
        assert event is not NEED_DATA, "incomplete command"
        if isinstance(event, LiteralRequest):
            conn.accept_literal()
            continue
        assert isinstance(event, CommandReceived) and isinstance(event.command, Search), event
        return event.command.key
    raise AssertionError("no command")


def test_the_fixture_has_gaps_in_its_uids(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as box:
            assert [m.uid for m in box.messages] == [1, 3, 5, 6, 7]
    run(scenario())


# Keys answered from the mailbox row -----------------------------------------------------------

ROW_CASES = [
    ("ALL", [1, 2, 3, 4, 5]),
    ("ANSWERED", [3]), ("UNANSWERED", [1, 2, 4, 5]),
    ("DELETED", [3]), ("UNDELETED", [1, 2, 4, 5]),
    ("DRAFT", [4]), ("UNDRAFT", [1, 2, 3, 5]),
    ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4, 5]),
    ("SEEN", [1, 3, 5]), ("UNSEEN", [2, 4]),
    # No \Recent in this server: RECENT and NEW match nothing, OLD everything.
    ("RECENT", []), ("NEW", []), ("OLD", [1, 2, 3, 4, 5]),
    ("KEYWORD $Work", [2, 5]), ("KEYWORD $WORK", [2, 5]), ("UNKEYWORD $work", [1, 3, 4]),
    ("KEYWORD $Other", []),
    ("BEFORE 3-Feb-2024", [1]), ("ON 3-Feb-2024", [2]), ("SINCE 3-Feb-2024", [2, 3, 4, 5]),
    ("ON 5-Feb-2024", []), ("ON 6-Feb-2024", [3]),  # internal dates compare in UTC
    ("BEFORE 1-Feb-2024", []), ("SINCE 10-Mar-2024", []),
    ("LARGER 1000", [4]), ("SMALLER 150", [5]), (f"LARGER {len(M5)}", [1, 2, 3, 4]),
    (f"SMALLER {len(M5)}", []),
    ("1", [1]), ("2:4", [2, 3, 4]), ("4:2", [2, 3, 4]), ("*", [5]), ("3:*", [3, 4, 5]),
    ("*:4", [4, 5]), ("1,3,5", [1, 3, 5]), ("6:9", []), ("5:9", [5]),
    ("UID 3", [2]), ("UID 2", []), ("UID 1:5", [1, 2, 3]), ("UID *", [5]), ("UID 6:*", [4, 5]),
    ("UID 100:*", [5]),  # "n:*" with n past the last UID still holds the last (RFC 3501 6.4.8)
    ("UID 1,7", [1, 5]),
    ("NOT SEEN", [2, 4]), ("NOT NOT SEEN", [1, 3, 5]),
    ("OR FLAGGED DRAFT", [2, 4]), ("OR SEEN UID 6", [1, 3, 4, 5]),
    ("SEEN UNDELETED", [1, 5]), ("(SEEN UNDELETED) 2:*", [5]), ("(OR ANSWERED DRAFT) NOT DELETED", [4]),
    ("NOT (SEEN DELETED)", [1, 2, 4, 5]),
]


def test_row_keys(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as box:  # one store for all cases: appends cost fsyncs
            wrong = [(program, expected, found) for program, expected in ROW_CASES
                     if (found := await box.find(program)) != expected]
            assert wrong == []
            assert box.cache.loads == 0  # none of these reads a message
    run(scenario())


def test_modseq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as box:
            mailbox_id = box.messages[0].mailbox_id
            change = await box.store.store_flags(mailbox_id, [box.messages[1].uid], FlagMode.ADD,
                                                 frozenset({"\\Seen"}))
            touched = change.changed[0].modseq
            messages = list(await box.store.messages(mailbox_id))
            assert await box.find(f"MODSEQ {touched}", messages=messages) == [2]
            assert await box.find(f"MODSEQ {messages[4].modseq}", messages=messages) == [2, 5]
            assert await box.find("MODSEQ 1", messages=messages) == [1, 2, 3, 4, 5]
            # The per-flag entry is accepted and ignored (RFC 7162 3.1.5 allows it).
            assert await box.find(f'MODSEQ "/flags/\\\\seen" all {touched}', messages=messages) == [2]
    run(scenario())


def test_star_means_the_last_message_of_the_view(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as box:
            first_three = box.messages[:3]
            assert await box.find("*", messages=first_three) == [3]
            assert await box.find("UID *", messages=first_three) == [3]
            # largest_seq overrides the view's length for "*" (a session's own count).
            assert await search(parse("4:*"), box.messages, cache=box.cache, store=box.store,
                                largest_seq=4) == [4]
            assert await box.find("*", messages=[]) == []
            assert await box.find("UID 1:*", messages=[]) == []
    run(scenario())


# Keys that read the message ------------------------------------------------------------------

CONTENT_CASES = [
    ("FROM alice", [1, 5]), ("FROM \"Alice Example\"", [1, 5]), ("FROM ALICE@EXAMPLE.ORG", [1, 5]),
    ("TO alice", [2]), ("TO example.net", [3]), ("CC erin", [3]), ("BCC frank", [4]), ("BCC alice", []),
    ("SUBJECT hello", [1, 5]), ("SUBJECT \"re: hello\"", [5]),
    ('SUBJECT "crème"', [2]), ('SUBJECT "CAFÉ"', [2]),  # RFC 2047 decoded, case-folded
    ("HEADER X-Priority 1", [1]), ("HEADER x-priority \"\"", [1]), ("HEADER Cc \"\"", [3]),
    ("HEADER X-Missing \"\"", []),
    ("BODY fox", [1]), ("BODY \"LAZY DOG\"", [1]), ("BODY Hello", []),  # BODY is not the header
    ('BODY "ünïcode"', [2]),  # base64 and UTF-8 decoded
    ('BODY "grüße"', [3]), ("BODY quarterly", [3]),  # both alternatives, QP and Latin-1 decoded
    ("BODY padding", [4]),
    ("TEXT hello", [1, 5]), ("TEXT fox", [1]), ('TEXT "crème"', [2]), ("TEXT nothing-like-this", []),
    ("SENTBEFORE 2-Feb-2024", [1]), ("SENTON 2-Feb-2024", [2]), ("SENTSINCE 5-Feb-2024", [3, 5]),
    ("SENTON 3-Feb-2024", []),  # the written date, not its UTC day
    ("NOT SENTON 1-Feb-2024", [2, 3, 4, 5]),  # no Date: matches no SENT key, so NOT matches it
    ("OR SUBJECT report BODY fox", [1, 3]), ("NOT BODY fox", [2, 3, 4, 5]),
    ("SEEN BODY o", [1, 5]), ("FROM alice NOT SUBJECT re", [1]),
]


def test_content_keys(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, gaps=False) as box:
            wrong = [(program, expected, found) for program, expected in CONTENT_CASES
                     if (found := await box.find(program)) != expected]
            assert wrong == []
    run(scenario())


def test_a_utf8_needle_sent_as_a_literal_with_charset(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, gaps=False) as box:
            needle = "CRÈME".encode()
            key = parse(f"CHARSET UTF-8 SUBJECT {{{len(needle)}+}}\r\n" + needle.decode())
            assert await search(key, box.messages, cache=box.cache, store=box.store) == [2]
    run(scenario())


def test_cheap_keys_decide_before_any_message_is_read(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, gaps=False) as box:
            # Only the three \Seen messages are read for the BODY test, whichever order is written.
            for program in ("SEEN BODY fox", "BODY fox SEEN", "(BODY fox) (SEEN)"):
                cache = MessageContentCache(max_entries=1)  # no reuse between messages
                assert await search(parse(program), box.messages, cache=cache, store=box.store) == [1]
                assert cache.loads == 3, program
            # An OR whose cheap side is true needs no content; NOT of a flag key neither.
            cache = MessageContentCache()
            assert await search(parse("OR ALL BODY fox"), box.messages, cache=cache, store=box.store) == [
                1, 2, 3, 4, 5]
            assert await search(parse("DRAFT NOT SEEN SUBJECT date"), box.messages, cache=cache,
                                store=box.store) == [4]
            assert cache.loads == 1
            # A search of only content keys reads each message once, and a second search hits.
            cache = MessageContentCache()
            await search(parse("SUBJECT x BODY y"), box.messages, cache=cache, store=box.store)
            assert (cache.loads, cache.hits) == (5, 0)
            await search(parse("TEXT x"), box.messages, cache=cache, store=box.store)
            assert (cache.loads, cache.hits) == (5, 5)
    run(scenario())


def test_a_message_whose_content_is_gone_does_not_match(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, gaps=False) as box:
            view = box.messages  # the session's view, before another session expunges #3
            await box.store.expunge(view[2].mailbox_id, [view[2].uid])
            assert await box.find("TEXT e", messages=view) == [1, 2, 4, 5]
            assert await box.find("DELETED", messages=view) == [3]  # row keys still answer
    run(scenario())


# ESEARCH --------------------------------------------------------------------------------------


def test_compact_set() -> None:
    assert compact_set([1, 2, 3, 5]) == "1:3,5"
    assert compact_set([7]) == "7"
    assert compact_set([1, 3, 4, 5, 6, 9, 10]) == "1,3:6,9:10"
    assert compact_set([5, 6, 2]) == "5:6,2"  # order kept, for COPYUID's paired sets
    assert compact_set([]) == ""


@pytest.mark.parametrize(("numbers", "options", "expected"), [
    ([2, 3, 4, 9], (), (Atom("ALL"), Atom("2:4,9"))),
    ([2, 3, 4, 9], ("ALL",), (Atom("ALL"), Atom("2:4,9"))),
    ([2, 3, 4, 9], ("COUNT", "MAX", "MIN"), (Atom("MIN"), 2, Atom("MAX"), 9, Atom("COUNT"), 4)),
    ([2, 3, 4, 9], ("ALL", "MIN", "COUNT", "MAX"),
     (Atom("MIN"), 2, Atom("MAX"), 9, Atom("COUNT"), 4, Atom("ALL"), Atom("2:4,9"))),
    ([], ("MIN", "MAX", "ALL", "COUNT"), (Atom("COUNT"), 0)),  # RFC 4731 3.1: no MIN/MAX/ALL
    ([], (), ()),
    ([7], ("MIN", "MAX"), (Atom("MIN"), 7, Atom("MAX"), 7)),
])
def test_esearch_values(numbers: list[int], options: tuple[str, ...], expected: tuple[object, ...]) -> None:
    assert esearch_values(numbers, options) == expected


def test_combinations_obey_set_algebra(tmp_path: Path) -> None:
    """Random programs of cheap and content keys (seeded, so the run is the same every time):
    NOT is the complement, OR the union, AND the intersection of what the parts match, however
    the two-pass evaluation splits the work."""
    leaves = [(parse(program), set(expected)) for program, expected in ROW_CASES[:40] + CONTENT_CASES]
    everything = {1, 2, 3, 4, 5}
    rng = random.Random(3501)

    def tree(depth: int) -> tuple[SearchKey, set[int]]:
        if depth == 0 or rng.random() < 0.3:
            return rng.choice(leaves)
        shape = rng.choice(("not", "or", "and"))
        if shape == "not":
            key, found = tree(depth - 1)
            return SearchNot(key), everything - found
        if shape == "or":
            (left, a), (right, b) = tree(depth - 1), tree(depth - 1)
            return SearchOr(left, right), a | b
        parts = [tree(depth - 1) for _ in range(rng.randint(2, 4))]
        return SearchAnd(tuple(k for k, _ in parts)), set.intersection(*(f for _, f in parts))

    async def scenario() -> None:
        async with mailbox(tmp_path) as box:  # UIDs with gaps, as ROW_CASES expect
            for _ in range(300):
                key, expected = tree(4)
                before = box.cache.loads
                assert await search(key, box.messages, cache=box.cache, store=box.store) == sorted(
                    expected), key
                assert box.cache.loads - before <= len(box.messages)
    run(scenario())


def test_header_keys_read_only_the_header_of_a_large_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path, gaps=False) as box:
            big = b"Subject: huge one\r\nDate: 1 Apr 2024 10:00:00 +0000\r\n\r\n" + b"z" * 300_000 + b"\r\n"
            added = await box.store.append_message(box.messages[0].mailbox_id, big)
            messages = [*box.messages, added]
            cache = MessageContentCache()
            for program, expected in (("SUBJECT huge", [6]), ("SENTON 1-Apr-2024", [6]),
                                      ("OR HEADER Date 2024 FROM nobody", [1, 2, 3, 5, 6])):
                assert await search(parse(program), messages, cache=cache, store=box.store) == expected
            assert (cache.header_loads, cache.loads) == (3, 5)  # the big one never loaded whole
            assert await search(parse("SUBJECT huge BODY zzz"), messages, cache=cache, store=box.store) == [6]
            assert cache.loads == 6
    run(scenario())
