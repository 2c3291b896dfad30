"""FETCH assembly against a real SQLite store: every attribute kind on a simple, a multipart and
a message/rfc822 message, written to the wire by the real serializer and compared byte for byte;
partials, PEEK vs not, BINARY and literal8, UID/MODSEQ placement, large messages streamed (from
the store when only the whole message is asked), and the shared content cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.domain.errors import NotFound, StorageError
from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import FlagMode, StoredMessage
from mailprime.message.imap_values import ImapValue, render
from mailprime.proto.imap.serializer import serialize
from mailprime.proto.imap.types import (
    NIL,
    Atom,
    BinarySection,
    BinarySize,
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
    STREAM_THRESHOLD,
    BlobSource,
    BytesSource,
    Need,
    UnknownCte,
    fetch_items,
    plan_fetch,
    response_value,
    sets_seen,
)
from mailprime.storage.sql import SqlStore, open_store

SIMPLE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.example, \"Joe Q.\" <joe@example.net>\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)
SIMPLE_HEADER, SIMPLE_BODY = SIMPLE.split(b"\r\n\r\n", 1)
SIMPLE_HEADER += b"\r\n\r\n"

ATTACHED = (
    b"From: inner@example.org\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
)
MULTI = (
    b"From: a@example.org\r\n"
    b"To: b@example.org\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    + ATTACHED +
    b"--XX\r\n"
    b"Content-Type: application/x-odd\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)
WHEN = datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@asynccontextmanager
async def mailbox(tmp: Path) -> AsyncIterator[tuple[SqlStore, MailboxId]]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=64 * 1024)
    try:
        account = await store.add_account("bob@example.com", "x")
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        yield store, box.id
    finally:
        await store.close()


def wire(items: tuple[Value, ...], *, utf8: bool = False) -> bytes:
    """The FETCH response as the serializer writes it; a streamed literal shows as <stream n>."""
    out = b""
    for segment in serialize(Untagged((1, Atom("FETCH"), ParenList(items))), utf8=utf8):
        out += segment if isinstance(segment, bytes) else b"<stream %d>" % segment.size
    return out


async def fetch(store: SqlStore, message: StoredMessage, *attributes: FetchAttribute,
                cache: MessageContentCache | None = None, **kw: Any) -> tuple[Value, ...]:
    cache = cache if cache is not None else MessageContentCache()
    return await fetch_items(message, attributes, cache=cache, store=store, **kw)


def body(section: Section | None = None, partial: Partial | None = None, peek: bool = False) -> BodySection:
    return BodySection(section or Section(), partial, peek)


async def drain(source: object) -> bytes:
    assert isinstance(source, BlobSource | BytesSource)
    return b"".join([chunk async for chunk in source.chunks()])


# Which attributes set \Seen and which need the octets -----------------------------------------


@pytest.mark.parametrize(("attributes", "seen"), [
    ((FetchItem.FLAGS, FetchItem.UID, FetchItem.ENVELOPE, FetchItem.BODYSTRUCTURE), False),
    ((body(peek=True), body(Section(text="HEADER"), peek=True)), False),
    ((BinarySection((1,), peek=True), BinarySize((1,)), FetchItem.RFC822_HEADER), False),
    ((body(),), True),
    ((body(Section((1,), "MIME")),), True),
    ((FetchItem.FLAGS, body(Section(text="HEADER"))), True),
    ((FetchItem.RFC822,), True),
    ((FetchItem.RFC822_TEXT,), True),
    ((BinarySection((1,)),), True),
])
def test_sets_seen(attributes: tuple[FetchAttribute, ...], seen: bool) -> None:
    assert sets_seen(attributes) is seen


def test_row_items_need_no_content() -> None:
    row = (FetchItem.FLAGS, FetchItem.UID, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.MODSEQ)
    assert plan_fetch(row).need is Need.NOTHING
    assert plan_fetch(()).need is Need.NOTHING
    for attribute in (FetchItem.ENVELOPE, FetchItem.BODY, FetchItem.BODYSTRUCTURE, FetchItem.RFC822,
                      FetchItem.RFC822_HEADER, FetchItem.RFC822_TEXT, body(peek=True),
                      BinarySection(), BinarySize((1,))):
        assert plan_fetch((*row, attribute)).need is not Need.NOTHING, attribute


# Row items ------------------------------------------------------------------------------------


def test_row_items_never_load_the_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE, flags=frozenset({"\\Seen", "$Work"}),
                                                 internal_date=WHEN)
            cache = MessageContentCache()
            items = await fetch(store, message, FetchItem.FLAGS, FetchItem.INTERNALDATE,
                                FetchItem.RFC822_SIZE, cache=cache)
            assert wire(items) == (b'* 1 FETCH (FLAGS ($Work \\Seen)'
                                   b' INTERNALDATE "05-Mar-2024 06:07:08 +0000"'
                                   b" RFC822.SIZE %d)\r\n" % len(SIMPLE))
            assert cache.loads == 0
    run(scenario())


def test_uid_comes_first_and_once_modseq_next(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            m = message.modseq
            items = await fetch(store, message, FetchItem.FLAGS, FetchItem.UID, include_uid=True)
            assert wire(items) == b"* 1 FETCH (UID 1 FLAGS ())\r\n"
            items = await fetch(store, message, FetchItem.FLAGS, include_uid=True, include_modseq=True)
            assert wire(items) == b"* 1 FETCH (UID 1 MODSEQ (%d) FLAGS ())\r\n" % m
            # Asked explicitly (without UID FETCH), and twice: each item once.
            items = await fetch(store, message, FetchItem.FLAGS, FetchItem.MODSEQ, FetchItem.FLAGS)
            assert wire(items) == b"* 1 FETCH (MODSEQ (%d) FLAGS ())\r\n" % m
            items = await fetch(store, message, body(peek=True), body())
            assert [i for i in items if isinstance(i, Atom)] == [Atom("BODY[]")]
    run(scenario())


# ENVELOPE, BODY, BODYSTRUCTURE -----------------------------------------------------------------


def test_envelope_of_a_simple_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            items = await fetch(store, message, FetchItem.ENVELOPE)
            assert wire(items) == (
                b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "afternoon meeting"'
                b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
                b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
                b' (("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
                b' ((NIL NIL "mooch" "owatagu.example")("Joe Q." NIL "joe" "example.net"))'
                b' NIL NIL NIL "<B27397-0100000@Blurdybloop.example>"))\r\n')
    run(scenario())


def test_bodystructure_and_body_of_a_simple_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            size = len(SIMPLE_BODY)
            items = await fetch(store, message, FetchItem.BODYSTRUCTURE, FetchItem.BODY)
            assert wire(items) == (
                b'* 1 FETCH (BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 1'
                b' NIL NIL NIL NIL) BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 1))\r\n'
                % (size, size))
    run(scenario())


def test_bodystructure_of_a_multipart_with_an_attached_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, MULTI)
            items = await fetch(store, message, FetchItem.BODY)
            assert wire(items) == (
                b'* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0)'
                b'("application" "octet-stream" NIL NIL NIL "base64" 8)'
                b'("message" "rfc822" NIL NIL NIL "7bit" %d'
                b' (NIL "inner" (("" NIL "inner" "example.org")) (("" NIL "inner" "example.org"))'
                b' (("" NIL "inner" "example.org")) NIL NIL NIL NIL NIL)'
                b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0) 3)'
                b'("application" "x-odd" NIL NIL NIL "x-uuencode" 11) "mixed"))\r\n'
                % (len(ATTACHED) - 2)).replace(b'(("" NIL', b"((NIL NIL")
            items = await fetch(store, message, FetchItem.BODYSTRUCTURE)
            written = wire(items)
            assert written.startswith(b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL'
                                      b' "quoted-printable" 9 0 NIL NIL NIL NIL)("application"')
            assert written.endswith(b' "mixed" ("boundary" "XX") NIL NIL NIL))\r\n')
    run(scenario())


def test_8bit_header_text_goes_in_a_literal_unless_utf8_mode(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = "Subject: café\r\nFrom: José <jose@example.org>\r\n\r\nx\r\n".encode()
            message = await store.append_message(box, raw)
            items = await fetch(store, message, FetchItem.ENVELOPE)
            subject = "café".encode()
            name = "José".encode()
            assert wire(items) == (
                b"* 1 FETCH (ENVELOPE (NIL {%d}\r\n%s ((" % (len(subject), subject)
                + b"{%d}\r\n%s NIL \"jose\" \"example.org\"))" % (len(name), name)
                + b" ((" + b"{%d}\r\n%s NIL \"jose\" \"example.org\"))" % (len(name), name)
                + b" ((" + b"{%d}\r\n%s NIL \"jose\" \"example.org\"))" % (len(name), name)
                + b" NIL NIL NIL NIL NIL))\r\n")
            assert wire(items, utf8=True) == (
                '* 1 FETCH (ENVELOPE (NIL "café" (("José" NIL "jose" "example.org"))'
                ' (("José" NIL "jose" "example.org")) (("José" NIL "jose" "example.org"))'
                ' NIL NIL NIL NIL NIL))\r\n').encode()
    run(scenario())


def test_8bit_display_names_in_an_address_list_stay_back_to_back(tmp_path: Path) -> None:
    """RFC 3501 9 env-to = "(" 1*address ")": the addresses are juxtaposed whatever their text
    needs, a literal (IMAP4rev1) or a UTF-8 quoted string (UTF-8 mode)."""
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = ("To: José <jose@example.org>, b@example.org, \"Zoë \\\"Z\\\"\" <z@example.org>\r\n"
                   "\r\nx\r\n").encode()
            message = await store.append_message(box, raw)
            items = await fetch(store, message, FetchItem.ENVELOPE)
            jose, zoe = "José".encode(), 'Zoë "Z"'.encode()
            assert wire(items) == (
                b"* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL"
                b" (({%d}\r\n%s NIL \"jose\" \"example.org\")" % (len(jose), jose)
                + b"(NIL NIL \"b\" \"example.org\")"
                + b"({%d}\r\n%s NIL \"z\" \"example.org\"))" % (len(zoe), zoe)
                + b" NIL NIL NIL NIL))\r\n")
            assert wire(items, utf8=True) == (
                '* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL'
                ' (("José" NIL "jose" "example.org")(NIL NIL "b" "example.org")'
                '("Zoë \\"Z\\"" NIL "z" "example.org"))'
                ' NIL NIL NIL NIL))\r\n').encode()
    run(scenario())


EIGHT_BIT_MULTI = (
    "From: a@example.org\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=XX; charset=\"é\"\r\n"
    "\r\n"
    "--XX\r\n"
    "Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "café\r\n"
    "--XX\r\n"
    "Content-Type: application/pdf; name=\"relevé.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"relevé.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAEC\r\n"
    "--XX--\r\n"
).encode()


def test_multipart_with_8bit_parameters_keeps_its_bodies_back_to_back(tmp_path: Path) -> None:
    """RFC 3501 9 body-type-mpart = 1*body SP media-subtype: no space between the bodies, even
    when 8-bit parameter values make them hold literals."""
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, EIGHT_BIT_MULTI)
            items = await fetch(store, message, FetchItem.BODY, FetchItem.BODYSTRUCTURE)
            name, e = "relevé.pdf".encode(), "é".encode()
            assert wire(items) == (
                b'* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "8bit" 5 0)'
                b'("application" "pdf" ("name" {%d}\r\n%s) NIL NIL "base64" 4) "mixed")'
                % (len(name), name)
                + b' BODYSTRUCTURE (("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "8bit" 5 0'
                b' NIL NIL NIL NIL)'
                b'("application" "pdf" ("name" {%d}\r\n%s) NIL NIL "base64" 4 NIL'
                b' ("attachment" ("filename" {%d}\r\n%s)) NIL NIL)' % (len(name), name, len(name), name)
                + b' "mixed" ("boundary" "XX" "charset" {%d}\r\n%s) NIL NIL NIL))\r\n' % (len(e), e))
            assert wire(items, utf8=True) == (
                '* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "8bit" 5 0)'
                '("application" "pdf" ("name" "relevé.pdf") NIL NIL "base64" 4) "mixed")'
                ' BODYSTRUCTURE (("text" "plain" ("charset" "utf-8" "format" "flowed") NIL NIL "8bit" 5 0'
                ' NIL NIL NIL NIL)'
                '("application" "pdf" ("name" "relevé.pdf") NIL NIL "base64" 4 NIL'
                ' ("attachment" ("filename" "relevé.pdf")) NIL NIL)'
                ' "mixed" ("boundary" "XX" "charset" "é") NIL NIL NIL))\r\n').encode()
    run(scenario())


GLOBAL = (
    b"From: a@example.org\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: message/global\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"hi\r\n"
)


def test_message_global_is_described_like_rfc822_only_for_imap4rev2(tmp_path: Path) -> None:
    """RFC 9051 9 body-type-msg covers MESSAGE/GLOBAL; RFC 3501's grammar does not, so an
    IMAP4rev1 client gets it as a basic body."""
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, GLOBAL)
            size = len(GLOBAL.split(b"\r\n\r\n", 1)[1])
            rev1 = await fetch(store, message, FetchItem.BODY)
            assert wire(rev1) == b'* 1 FETCH (BODY ("message" "global" NIL NIL NIL "7bit" %d))\r\n' % size
            rev2 = await fetch(store, message, FetchItem.BODY, rev2=True)
            assert wire(rev2, utf8=True) == (
                b'* 1 FETCH (BODY ("message" "global" NIL NIL NIL "7bit" %d'
                b' (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)'
                b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1) 3))\r\n' % size)
    run(scenario())


def _containers(children: st.SearchStrategy[ImapValue]) -> st.SearchStrategy[ImapValue]:
    """A parenthesised list whose items may include a back-to-back run of parenthesised lists."""
    paren = st.lists(children, max_size=4).map(tuple)
    back_to_back = st.lists(paren, min_size=1, max_size=3)
    items: st.SearchStrategy[ImapValue] = st.one_of(children, back_to_back)
    return st.lists(items, max_size=4).map(tuple)


_LEAVES = st.one_of(st.none(), st.integers(0, 2**32), st.binary(max_size=40))
_STRUCTURES = st.recursive(_LEAVES, _containers, max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(_STRUCTURES, st.booleans())
def test_response_values_write_what_the_reference_writer_writes(value: ImapValue, utf8: bool) -> None:
    """Whatever the shape (nesting, back-to-back runs, 8-bit, CR/LF or NUL strings), the response
    model and its serializer write exactly what imap_values.render, the grammar's reference
    checked against Dovecot, writes."""
    line = b"".join(s for s in serialize(Untagged((response_value(value),)), utf8=utf8)
                    if isinstance(s, bytes))
    assert line == b"* " + render(value, utf8=utf8) + b"\r\n"


# BODY[section] -----------------------------------------------------------------------------------


def test_whole_header_and_text_sections(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            items = await fetch(store, message, body(peek=True), body(Section(text="HEADER"), peek=True),
                                body(Section(text="TEXT")))
            assert wire(items) == (b"* 1 FETCH (BODY[] {%d}\r\n%s BODY[HEADER] {%d}\r\n%s"
                                   b" BODY[TEXT] {%d}\r\n%s)\r\n"
                                   % (len(SIMPLE), SIMPLE, len(SIMPLE_HEADER), SIMPLE_HEADER,
                                      len(SIMPLE_BODY), SIMPLE_BODY))
            items = await fetch(store, message, FetchItem.RFC822, FetchItem.RFC822_HEADER,
                                FetchItem.RFC822_TEXT)
            assert items == (Atom("RFC822"), Literal(SIMPLE), Atom("RFC822.HEADER"), Literal(SIMPLE_HEADER),
                             Atom("RFC822.TEXT"), Literal(SIMPLE_BODY))
    run(scenario())


def test_header_fields_keep_the_names_as_asked(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            items = await fetch(store, message,
                                body(Section(text="HEADER.FIELDS", fields=("Subject", "FROM")), peek=True),
                                body(Section(text="HEADER.FIELDS.NOT",
                                             fields=("date", "from", "to", "message-id")), peek=True))
            fields = b"From: Fred Foobar <foobar@Blurdybloop.example>\r\nSubject: afternoon meeting\r\n\r\n"
            rest = b"Subject: afternoon meeting\r\n\r\n"
            assert wire(items) == (b"* 1 FETCH (BODY[HEADER.FIELDS (Subject FROM)] {%d}\r\n%s"
                                   b" BODY[HEADER.FIELDS.NOT (date from to message-id)] {%d}\r\n%s)\r\n"
                                   % (len(fields), fields, len(rest), rest))
    run(scenario())


def test_numbered_parts_mime_and_the_attached_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, MULTI)
            items = await fetch(store, message, body(Section((1,))), body(Section((2,), "MIME")),
                                body(Section((3,), "HEADER")), body(Section((3,), "TEXT")),
                                body(Section((3, 1))), body(Section((9,))))
            assert items == (
                Atom("BODY[1]"), Literal(b"caf=C3=A9"),
                Atom("BODY[2.MIME]"),
                Literal(b"Content-Type: application/octet-stream\r\n"
                        b"Content-Transfer-Encoding: base64\r\n\r\n"),
                Atom("BODY[3.HEADER]"), Literal(b"From: inner@example.org\r\nSubject: inner\r\n\r\n"),
                Atom("BODY[3.TEXT]"), Literal(b"inner body"),  # the CRLF before "--XX" is the delimiter's
                Atom("BODY[3.1]"), Literal(b"inner body"),
                Atom("BODY[9]"), String(b""),  # no such part: the empty string
            )
            # Part 1 of a single-part message is its body (RFC 3501 6.4.5).
            simple = await store.append_message(box, SIMPLE)
            assert await fetch(store, simple, body(Section((1,)))) == (Atom("BODY[1]"), Literal(SIMPLE_BODY))
    run(scenario())


def test_partials_name_only_the_origin(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            items = await fetch(store, message, body(partial=Partial(0, 4)),
                                body(Section(text="TEXT"), Partial(6, 3), peek=True),
                                body(partial=Partial(len(SIMPLE), 10)),
                                body(partial=Partial(len(SIMPLE) - 2, 10)))
            assert wire(items) == (b"* 1 FETCH (BODY[]<0> {4}\r\nDate BODY[TEXT]<6> {3}\r\nJoe"
                                   b' BODY[]<%d> "" BODY[]<%d> {2}\r\n\r\n)\r\n'
                                   % (len(SIMPLE), len(SIMPLE) - 2))
    run(scenario())


def test_8bit_and_nul_bodies_are_literals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = b"Subject: x\r\n\r\ncaf\xc3\xa9 \x00 \xff\r\n"
            message = await store.append_message(box, raw)
            items = await fetch(store, message, body(Section(text="TEXT"), peek=True))
            for utf8 in (False, True):
                expected = b"* 1 FETCH (BODY[TEXT] {11}\r\ncaf\xc3\xa9 \x00 \xff\r\n)\r\n"
                assert wire(items, utf8=utf8) == expected
    run(scenario())


# BINARY ------------------------------------------------------------------------------------------


def test_binary_decodes_and_uses_literal8_for_nul(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, MULTI)
            items = await fetch(store, message, BinarySection((1,), peek=True), BinarySection((2,)),
                                BinarySize((1,)), BinarySize((2,)), BinarySection((2,), Partial(1, 2)))
            assert wire(items) == (b"* 1 FETCH (BINARY[1] {5}\r\ncaf\xc3\xa9"
                                   b" BINARY[2] ~{4}\r\n\x00\x01\x02\x03"
                                   b" BINARY.SIZE[1] 5 BINARY.SIZE[2] 4 BINARY[2]<1> {2}\r\n\x01\x02)\r\n")
    run(scenario())


def test_binary_of_an_unknown_encoding_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, MULTI)
            for attribute in (BinarySection((4,)), BinarySize((4,))):
                with pytest.raises(UnknownCte) as info:
                    await fetch(store, message, attribute)
                assert info.value.imap_code == "UNKNOWN-CTE"
                assert "4" in str(info.value)
            # BODY[4] is fine: no decoding.
            items = await fetch(store, message, body(Section((4,))))
            assert items == (Atom("BODY[4]"), Literal(b"begin 644 x"))
    run(scenario())


# Large messages ----------------------------------------------------------------------------------


def big_message(size: int = STREAM_THRESHOLD * 2 + 12_345) -> bytes:
    head = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n"
    line = b"0123456789" * 7 + b"\r\n"
    return head + (line * (size // len(line) + 1))[:size - len(head)]


def test_a_large_message_fetched_whole_streams_from_the_store_unloaded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = big_message()
            message = await store.append_message(box, raw)
            cache = MessageContentCache()
            items = await fetch(store, message, FetchItem.UID, body(peek=True), FetchItem.RFC822_SIZE,
                                cache=cache)
            assert cache.loads == 0
            assert items[:3] == (Atom("UID"), 1, Atom("BODY[]"))
            streamed = items[3]
            assert isinstance(streamed, StreamedLiteral) and not streamed.binary
            assert streamed.size == len(raw)
            assert wire(items) == b"* 1 FETCH (UID 1 BODY[] {%d}\r\n<stream %d> RFC822.SIZE %d)\r\n" % (
                len(raw), len(raw), len(raw))
            assert await drain(streamed.source) == raw
            # A partial of it: a window streamed from the store, still nothing loaded.
            items = await fetch(store, message, FetchItem.RFC822, body(partial=Partial(100_000, 2_000_000)),
                                body(partial=Partial(len(raw) + 5, 10)), cache=cache)
            assert cache.loads == 0
            whole, window, past = items[1], items[3], items[5]
            assert isinstance(whole, StreamedLiteral) and isinstance(window, StreamedLiteral)
            assert items[2] == Atom("BODY[]<100000>")
            assert window.size == 2_000_000
            assert await drain(whole.source) == raw
            assert await drain(window.source) == raw[100_000:2_100_000]
            assert past == String(b"")
    run(scenario())


def test_a_large_body_with_other_items_is_streamed_from_memory(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = big_message()
            message = await store.append_message(box, raw)
            cache = MessageContentCache()
            items = await fetch(store, message, FetchItem.ENVELOPE, body(Section(text="TEXT")),
                                body(Section(text="HEADER")), cache=cache)
            assert cache.loads == 1
            text = items[3]
            assert isinstance(text, StreamedLiteral) and isinstance(text.source, BytesSource)
            header_end = raw.index(b"\r\n\r\n") + 4
            assert await drain(text.source) == raw[header_end:]
            assert items[5] == Literal(raw[:header_end])
    run(scenario())


def test_streaming_a_message_expunged_meanwhile_fails_loudly(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = big_message()
            message = await store.append_message(box, raw, flags=frozenset({"\\Deleted"}))
            items = await fetch(store, message, body(peek=True))
            await store.expunge(box)
            streamed = items[1]
            assert isinstance(streamed, StreamedLiteral)
            with pytest.raises(NotFound):
                await drain(streamed.source)
            with pytest.raises(NotFound):  # and a fresh FETCH of its content says so at once
                await fetch(store, message, FetchItem.ENVELOPE)
    run(scenario())


def test_a_blob_shorter_than_its_literal_is_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            message = await store.append_message(box, SIMPLE)
            source = BlobSource(store, message.blob_id, 10, len(SIMPLE))
            with pytest.raises(StorageError):
                await drain(source)
            assert await drain(BlobSource(store, message.blob_id, 10, 5)) == SIMPLE[10:15]
    run(scenario())


# The content cache ------------------------------------------------------------------------------


def test_the_cache_loads_once_and_evicts_least_recently_used(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            messages = [await store.append_message(box, SIMPLE + b"%d\r\n" % i) for i in range(4)]
            cache = MessageContentCache(max_entries=2)
            for m in (messages[0], messages[0], messages[1], messages[0], messages[2]):
                await cache.get(store, m.blob_id)
            assert (cache.loads, cache.hits, len(cache)) == (3, 2, 2)
            await cache.get(store, messages[0].blob_id)  # still there: it was used last but one
            assert cache.hits == 3
            await cache.get(store, messages[1].blob_id)  # evicted
            assert cache.loads == 4
            # The octet bound too: room for about one message (its octets, its header's copy,
            # its one part).
            small = MessageContentCache(max_bytes=len(SIMPLE) + len(SIMPLE_HEADER) + 600)
            for m in messages:
                await small.get(store, m.blob_id)
            assert len(small) == 1 and small.cached_bytes <= small.max_bytes
            cache.forget(messages[0].blob_id)
            cache.forget(messages[0].blob_id)
            assert len(cache) == 1
    run(scenario())


def test_the_cache_does_not_keep_huge_messages(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = big_message()
            message = await store.append_message(box, raw)
            cache = MessageContentCache(max_entry_bytes=len(raw) - 1)
            parsed = await cache.get(store, message.blob_id)
            assert parsed.raw == raw and parsed.header == raw[:raw.index(b"\r\n\r\n") + 4]
            await cache.get(store, message.blob_id)
            assert (cache.loads, len(cache)) == (2, 0)
    run(scenario())


def test_a_reused_blob_id_of_another_size_is_reloaded(tmp_path: Path) -> None:
    """SQLite hands out a released blob id again: an entry whose size disagrees with the mailbox
    row is stale and must not be served (see content.MessageContentCache.get)."""
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            other = await store.add_account("eve@example.com", "x")
            other_box = await store.get_mailbox(other.id, "INBOX")
            assert other_box is not None
            cache = MessageContentCache()
            secret = await store.append_message(other_box.id, b"Subject: secret\r\n\r\nsecret\r\n")
            assert await fetch(store, secret, body(peek=True), cache=cache)
            await store.store_flags(other_box.id, [secret.uid], FlagMode.ADD, frozenset({"\\Deleted"}))
            await store.expunge(other_box.id)
            mine = await store.append_message(box, SIMPLE)
            items = await fetch(store, mine, body(peek=True), cache=cache)
            assert items == (Atom("BODY[]"), Literal(SIMPLE))
    run(scenario())


def test_header_items_of_a_large_message_read_only_its_header(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            raw = big_message()
            header = raw[:raw.index(b"\r\n\r\n") + 4]
            message = await store.append_message(box, raw)
            cache = MessageContentCache()
            items = await fetch(store, message, FetchItem.FLAGS, FetchItem.ENVELOPE, FetchItem.RFC822_HEADER,
                                body(Section(text="HEADER.FIELDS", fields=("SUBJECT",)), peek=True),
                                body(Section(text="HEADER"), Partial(0, 9), peek=True), cache=cache)
            assert (cache.loads, cache.header_loads, len(cache)) == (0, 1, 0)
            assert items[3] == ParenList((NIL, String(b"big"), NIL, NIL, NIL, NIL, NIL, NIL, NIL, NIL))
            assert items[4:] == (Atom("RFC822.HEADER"), Literal(header),
                                 Atom("BODY[HEADER.FIELDS (SUBJECT)]"), Literal(b"Subject: big\r\n\r\n"),
                                 Atom("BODY[HEADER]<0>"), Literal(b"Subject: "))
            # Once the whole message is cached (BODYSTRUCTURE needs it), header items use it.
            await fetch(store, message, FetchItem.BODYSTRUCTURE, cache=cache)
            await fetch(store, message, FetchItem.ENVELOPE, cache=cache)
            assert (cache.loads, cache.header_loads, cache.hits) == (1, 1, 1)
    run(scenario())


def test_a_header_too_long_to_peek_at_loads_the_whole_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mailbox(tmp_path) as (store, box):
            long_header = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(1200))
            raw = long_header + big_message()
            message = await store.append_message(box, raw)
            cache = MessageContentCache()
            items = await fetch(store, message, body(Section(text="HEADER.FIELDS", fields=("subject",)),
                                                     peek=True), cache=cache)
            assert items == (Atom("BODY[HEADER.FIELDS (subject)]"), Literal(b"Subject: big\r\n\r\n"))
            assert (cache.loads, cache.header_loads) == (1, 0)
    run(scenario())
