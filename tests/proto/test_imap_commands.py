"""Every IMAP command parsed from the bytes real clients send (imaplib, Thunderbird, mbsync,
K-9/Outlook-style extensions), to the typed AST, through the server core."""

from __future__ import annotations

from datetime import date

import pytest

from mailprime.proto.imap.types import (
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    DateField,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchItem,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListReturn,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Partial,
    Rename,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSeq,
    SearchSize,
    SearchText,
    SearchUid,
    Section,
    Select,
    SeqRange,
    SequenceSet,
    SetQuota,
    SizeField,
    State,
    Status,
    Store,
    StoreMode,
    Subscribe,
    TextField,
    UidExpunge,
    Unselect,
    Unsubscribe,
    fetch_item_name,
)
from tests.proto.test_imap_server import parse, refused

AUTH = State.AUTHENTICATED


def seq(text: str) -> SequenceSet:
    ranges = []
    for item in text.split(","):
        lo, _, hi = item.partition(":")
        start = None if lo == "*" else int(lo)
        end = start if not hi else (None if hi == "*" else int(hi))
        ranges.append(SeqRange(start, end))
    return SequenceSet(tuple(ranges))


@pytest.mark.parametrize(("line", "command", "state"), [
    (b"a capability", Capability(), State.NOT_AUTHENTICATED),
    (b"a NOOP", Noop(), State.SELECTED),
    (b"a LOGOUT", Logout(), AUTH),
    (b'a LOGIN "alice@example.com" "p a\\"ss"', Login("alice@example.com", 'p a"ss'),
     State.NOT_AUTHENTICATED),
    (b"a ENABLE CONDSTORE utf8=accept", Enable(("CONDSTORE", "UTF8=ACCEPT")), AUTH),
    (b"a SELECT inbox", Select("INBOX"), AUTH),
    (b"a SELECT INBOX (CONDSTORE)", Select("INBOX", condstore=True), AUTH),
    (b'a EXAMINE "Sent Items"', Examine("Sent Items"), State.SELECTED),
    (b"a CREATE Archive/2024", Create("Archive/2024"), AUTH),
    (b"a CREATE Junk (USE (\\junk))", Create("Junk", ("\\Junk",)), AUTH),
    (b"a DELETE Old", Delete("Old"), AUTH),
    (b"a RENAME Old New", Rename("Old", "New"), AUTH),
    (b"a SUBSCRIBE &ZeVnLIqe-", Subscribe("日本語"), AUTH),
    (b'a UNSUBSCRIBE "&AKM-"', Unsubscribe("£"), AUTH),
    (b'a LIST "" *', List("", ("*",)), AUTH),
    (b'a LIST "" ""', List("", ("",)), AUTH),
    (b"a LIST Archive/ %", List("Archive/", ("%",)), AUTH),
    (b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX*" %) RETURN (CHILDREN SPECIAL-USE)',
     List("", ("INBOX*", "%"), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
          ListReturn(children=True, special_use=True)), AUTH),
    (b'a LIST "" % RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))',
     List("", ("%",), return_options=ListReturn(subscribed=True, status=("MESSAGES", "UNSEEN"))), AUTH),
    (b'a LIST (SPECIAL-USE) "" *', List("", ("*",), frozenset({"SPECIAL-USE"})), AUTH),
    (b'a LSUB "" "*"', Lsub("", "*"), AUTH),
    (b"a NAMESPACE", Namespace(), AUTH),
    (b"a STATUS Drafts (UIDNEXT MESSAGES unseen HIGHESTMODSEQ SIZE)",
     Status("Drafts", ("UIDNEXT", "MESSAGES", "UNSEEN", "HIGHESTMODSEQ", "SIZE")), AUTH),
    (b"a IDLE", Idle(), State.SELECTED),
    (b"a CHECK", Check(), State.SELECTED),
    (b"a CLOSE", Close(), State.SELECTED),
    (b"a UNSELECT", Unselect(), State.SELECTED),
    (b"a EXPUNGE", Expunge(), State.SELECTED),
    (b"a UID EXPUNGE 3:5,7", UidExpunge(seq("3:5,7")), State.SELECTED),
    (b"a COPY 1:3 Trash", Copy(seq("1:3"), "Trash"), State.SELECTED),
    (b'a UID COPY 4,6:* "Saved"', Copy(seq("4,6:*"), "Saved", uid=True), State.SELECTED),
    (b"a MOVE 2 Junk", Move(seq("2"), "Junk"), State.SELECTED),
    (b"a uid move 9:7 Archive", Move(seq("9:7"), "Archive", uid=True), State.SELECTED),
    (b'a ID ("name" "Thunderbird" "version" "115.0" "os" NIL)',
     Id((("name", "Thunderbird"), ("version", "115.0"), ("os", None))), State.NOT_AUTHENTICATED),
    (b"a ID NIL", Id(None), State.SELECTED),
    (b"a ID ()", Id(()), State.SELECTED),
    (b'a GETQUOTA ""', GetQuota(""), AUTH),
    (b"a GETQUOTAROOT INBOX", GetQuotaRoot("INBOX"), AUTH),
    (b'a SETQUOTA "" (STORAGE 512 messages 1000)',
     SetQuota("", (("STORAGE", 512), ("MESSAGES", 1000))), AUTH),
    (b"a SETQUOTA x ()", SetQuota("x", ()), AUTH),
])
def test_command(line: bytes, command: Command, state: State) -> None:
    assert parse(line, state) == command


def test_utf8_mode_takes_names_as_utf8_and_mutf7_literally() -> None:
    assert parse("a SELECT \"Boîte\"".encode(), AUTH, utf8=True) == Select("Boîte")
    assert parse(b"a SELECT &ZeVnLIqe-", AUTH, utf8=True) == Select("&ZeVnLIqe-")
    assert parse(b"a SELECT &ZeVnLIqe-", AUTH) == Select("日本語")
    assert parse("a SELECT {6}\r\nBoîte".encode(), AUTH) == Select("Boîte")  # UTF-8 in a literal


# FETCH ----------------------------------------------------------------------------------------


def fetch(text: bytes) -> Fetch:
    command = parse(text)
    assert isinstance(command, Fetch)
    return command


def test_fetch_macros_expand() -> None:
    assert fetch(b"a FETCH 1 ALL").attributes == (FetchItem.FLAGS, FetchItem.INTERNALDATE,
                                                  FetchItem.RFC822_SIZE, FetchItem.ENVELOPE)
    assert fetch(b"a FETCH 1 fast").attributes == (FetchItem.FLAGS, FetchItem.INTERNALDATE,
                                                   FetchItem.RFC822_SIZE)
    assert fetch(b"a FETCH 1 FULL").attributes[-1] == FetchItem.BODY


def test_mbsync_uid_fetch_adds_uid_once() -> None:
    command = fetch(b"5 UID FETCH 1:* (UID FLAGS)")
    assert command == Fetch(seq("1:*"), (FetchItem.UID, FetchItem.FLAGS), uid=True)
    assert fetch(b"6 UID FETCH 3 FLAGS").attributes == (FetchItem.UID, FetchItem.FLAGS)


def test_every_fetch_attribute() -> None:
    command = fetch(b"a FETCH 2:4 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY UID MODSEQ "
                    b"RFC822 RFC822.HEADER RFC822.TEXT BODY[] BODY.PEEK[1.2.MIME] BODY[TEXT]<0.2048> "
                    b"BODY[2] BODY.PEEK[1.HEADER.FIELDS.NOT (Received)] BINARY[1] BINARY.PEEK[1.2]<10.20> "
                    b"BINARY.SIZE[3] BINARY[])")
    assert command.attributes == (
        *(FetchItem(v) for v in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                                 "UID", "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT")),
        BodySection(),
        BodySection(Section((1, 2), "MIME"), peek=True),
        BodySection(Section(text="TEXT"), Partial(0, 2048)),
        BodySection(Section((2,))),
        BodySection(Section((1,), "HEADER.FIELDS.NOT", ("Received",)), peek=True),
        BinarySection((1,)),
        BinarySection((1, 2), Partial(10, 20), peek=True),
        BinarySize((3,)),
        BinarySection(),
    )
    assert [fetch_item_name(a) for a in command.attributes[11:]] == [
        "BODY[]", "BODY[1.2.MIME]", "BODY[TEXT]<0>", "BODY[2]", "BODY[1.HEADER.FIELDS.NOT (Received)]",
        "BINARY[1]", "BINARY[1.2]<10>", "BINARY.SIZE[3]", "BINARY[]"]


def test_fetch_changedsince_adds_modseq() -> None:
    command = fetch(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)")
    assert command == Fetch(seq("1:*"), (FetchItem.UID, FetchItem.FLAGS, FetchItem.MODSEQ), True, 12345)


@pytest.mark.parametrize("line", [
    b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY[1.]", b"a FETCH 1 BODY[HEADER.FIELDS]",
    b"a FETCH 1 BODY[]<1>", b"a FETCH 1 BODY[]<1.0>", b"a FETCH 1 BINARY[TEXT]", b"a FETCH 1 (FAST)",
    b"a FETCH 1 ()", b"a FETCH 1", b"a FETCH 1 FLAGS (VANISHED)", b"a FETCH 1 BODY[0]",
])
def test_bad_fetch(line: bytes) -> None:
    assert refused(line).tag == "a"


# STORE ----------------------------------------------------------------------------------------


def test_store_forms() -> None:
    assert parse(b"a STORE 1 FLAGS (\\seen \\ANSWERED $Forwarded)") == Store(
        seq("1"), StoreMode.REPLACE, False, frozenset({"\\Seen", "\\Answered", "$Forwarded"}))
    assert parse(b"a UID STORE 1:* +FLAGS.SILENT (\\Deleted)") == Store(
        seq("1:*"), StoreMode.ADD, True, frozenset({"\\Deleted"}), uid=True)
    assert parse(b"a STORE 2 -flags \\Flagged \\Draft") == Store(
        seq("2"), StoreMode.REMOVE, False, frozenset({"\\Flagged", "\\Draft"}))
    assert parse(b"a STORE 3 (UNCHANGEDSINCE 320162338) +FLAGS ()") == Store(
        seq("3"), StoreMode.ADD, False, frozenset(), unchanged_since=320162338)


# SEARCH ---------------------------------------------------------------------------------------


def search(text: bytes) -> Search:
    command = parse(text)
    assert isinstance(command, Search)
    return command


def test_every_search_key() -> None:
    line = (b"a SEARCH ALL ANSWERED BCC b CC c DELETED DRAFT FLAGGED FROM f HEADER X-Spam yes KEYWORD $J "
            b"LARGER 10 NEW NOT SEEN OLD ON 1-Jan-2024 OR TO t SUBJECT s RECENT SEEN SENTBEFORE 2-Feb-2024 "
            b'SENTON "3-Mar-2024" SENTSINCE 04-Apr-2024 SINCE 5-May-2024 SMALLER 99 TEXT t BODY b '
            b"UID 1:5 UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $K UNSEEN 2,4:* (DELETED SEEN) "
            b"MODSEQ 42 BEFORE 6-Jun-2024")
    key = search(line).key
    assert isinstance(key, SearchAnd)
    assert key.keys == (
        SearchAll(), SearchFlag("\\Answered"), SearchHeader("BCC", "b"), SearchHeader("CC", "c"),
        SearchFlag("\\Deleted"), SearchFlag("\\Draft"), SearchFlag("\\Flagged"), SearchHeader("FROM", "f"),
        SearchHeader("X-Spam", "yes"), SearchFlag("$J"), SearchSize(SizeField.LARGER, 10),
        SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))), SearchNot(SearchFlag("\\Seen")),
        SearchFlag("\\Recent", False), SearchDate(DateField.ON, date(2024, 1, 1)),
        SearchOr(SearchHeader("TO", "t"), SearchHeader("SUBJECT", "s")), SearchFlag("\\Recent"),
        SearchFlag("\\Seen"), SearchDate(DateField.SENTBEFORE, date(2024, 2, 2)),
        SearchDate(DateField.SENTON, date(2024, 3, 3)), SearchDate(DateField.SENTSINCE, date(2024, 4, 4)),
        SearchDate(DateField.SINCE, date(2024, 5, 5)), SearchSize(SizeField.SMALLER, 99),
        SearchText(TextField.TEXT, "t"), SearchText(TextField.BODY, "b"), SearchUid(seq("1:5")),
        SearchFlag("\\Answered", False), SearchFlag("\\Deleted", False), SearchFlag("\\Draft", False),
        SearchFlag("\\Flagged", False), SearchFlag("$K", False), SearchFlag("\\Seen", False),
        SearchSeq(seq("2,4:*")), SearchAnd((SearchFlag("\\Deleted"), SearchFlag("\\Seen"))),
        SearchModSeq(42), SearchDate(DateField.BEFORE, date(2024, 6, 6)),
    )


def test_search_charset_return_and_literals() -> None:
    command = search("a UID SEARCH RETURN (MIN MAX COUNT ALL) CHARSET utf-8 SUBJECT {5}\r\nçava".encode())
    assert command == Search(SearchHeader("SUBJECT", "çava"), "UTF-8", True, ("MIN", "MAX", "COUNT", "ALL"))
    assert search(b"a SEARCH RETURN () UNSEEN").return_options == ()
    assert search(b'a SEARCH CHARSET "US-ASCII" UNSEEN').charset == "US-ASCII"
    assert search(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338').key == SearchModSeq(
        620162338, ("/flags/\\draft", "all"))
    assert search(b"a SEARCH NOT OR 1 2").key == SearchNot(SearchOr(SearchSeq(seq("1")), SearchSeq(seq("2"))))


@pytest.mark.parametrize("line", [
    b"a SEARCH", b"a SEARCH RETURN (SAVE) ALL", b"a SEARCH OR ALL", b"a SEARCH ON 31-Feb-2024",
    b"a SEARCH SINCE 1-Foo-2024", b"a SEARCH LARGER x", b"a SEARCH (ALL", b"a SEARCH ALL)",
    b"a SEARCH UID 0", b"a SEARCH ALL  ALL",
])
def test_bad_search(line: bytes) -> None:
    assert refused(line).tag == "a"


# Other refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "state"), [
    (b"a SELECT INBOX (QRESYNC (1 2))", AUTH),
    (b"a LIST (RECURSIVEMATCH) \"\" *", AUTH),
    (b"a LIST (FOO) \"\" *", AUTH),
    (b"a LIST \"\" * RETURN (FOO)", AUTH),
    (b"a STATUS INBOX ()", AUTH),
    (b"a STATUS INBOX (FOO)", AUTH),
    (b"a ENABLE", AUTH),
    (b"a RENAME x", AUTH),
    (b"a APPEND INBOX", AUTH),
    (b"a APPEND INBOX (\\Recent) {1}", AUTH),
    (b'a APPEND INBOX "31-Feb-2024 10:00:00 +0000" {1}', AUTH),
    (b'a APPEND INBOX "1-Feb-2024 10:00 +0000" {1}', AUTH),
    (b"a ID (\"a\")", AUTH),
    (b"a CREATE x (USE)", AUTH),
    (b"a SETQUOTA x (STORAGE)", AUTH),
    (b"a AUTHENTICATE", State.NOT_AUTHENTICATED),
])
def test_bad_arguments(line: bytes, state: State) -> None:
    assert refused(line, state).tag == "a"
