"""Every IMAP response shape written byte-exact, in IMAP4rev1 and in UTF-8 mode."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailprime.proto import LocalProtocolError
from mailprime.proto.imap.server import ServerConnection
from mailprime.proto.imap.types import (
    NIL,
    Atom,
    BodySection,
    Continuation,
    DateTime,
    FetchItem,
    Flag,
    Juxtaposed,
    Literal,
    MailboxName,
    ParenList,
    Response,
    ResponseCode,
    ResponseStatus,
    Section,
    SequenceSet,
    StreamedLiteral,
    String,
    Tagged,
    Untagged,
    UntaggedStatus,
    bad,
    bye,
    capability_response,
    exists,
    expunge,
    fetch_response,
    flags_response,
    list_response,
    no,
    ok,
    recent,
    search_response,
    sequence_atom,
)


def wire(response: Response, utf8: bool = False) -> bytes:
    conn = ServerConnection()
    if utf8:
        conn.enable_utf8()
    segments = conn.send(response)
    assert all(isinstance(s, bytes) for s in segments)
    return b"".join(s for s in segments if isinstance(s, bytes))


@pytest.mark.parametrize(("response", "expected"), [
    (UntaggedStatus(ResponseStatus.OK, "mailprime ready",
                    ResponseCode("CAPABILITY", (Atom("IMAP4rev1"), Atom("IMAP4rev2"), Atom("AUTH=PLAIN")))),
     b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 AUTH=PLAIN] mailprime ready\r\n"),
    (UntaggedStatus(ResponseStatus.PREAUTH, "welcome"), b"* PREAUTH welcome\r\n"),
    (bye("logging out"), b"* BYE logging out\r\n"),
    (ok("a1"), b"a1 OK completed\r\n"),
    (ok("a2", "SELECT completed", ResponseCode("READ-WRITE")), b"a2 OK [READ-WRITE] SELECT completed\r\n"),
    (no("a3", "no such mailbox", ResponseCode("TRYCREATE")), b"a3 NO [TRYCREATE] no such mailbox\r\n"),
    (bad("a4", "line\r\nbreak"), b"a4 BAD line  break\r\n"),
    (Tagged("a5", ResponseStatus.OK, "", ResponseCode("CLOSED")), b"a5 OK [CLOSED]\r\n"),
    (UntaggedStatus(ResponseStatus.OK, "UIDs valid", ResponseCode("UIDVALIDITY", (3857529045,))),
     b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
    (UntaggedStatus(ResponseStatus.OK, "Limited", ResponseCode(
        "PERMANENTFLAGS", (ParenList((Flag("\\Seen"), Flag("\\Deleted"), Flag("\\*"))),))),
     b"* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] Limited\r\n"),
    (ok("a6", "APPEND completed", ResponseCode("APPENDUID", (38505, 3955))),
     b"a6 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
    (ok("a7", "done", ResponseCode("COPYUID", (38505, sequence_atom([304, 319, 320, 321]),
                                               sequence_atom([3956, 3957, 3958, 3959])))),
     b"a7 OK [COPYUID 38505 304,319:321 3956:3959] done\r\n"),
    (ok("a8", "Conditional STORE failed", ResponseCode("MODIFIED", (Atom("7,9"),))),
     b"a8 OK [MODIFIED 7,9] Conditional STORE failed\r\n"),
    (no("a9", "charset", ResponseCode("BADCHARSET", (ParenList((Atom("UTF-8"),)),))),
     b"a9 NO [BADCHARSET (UTF-8)] charset\r\n"),
    (exists(172), b"* 172 EXISTS\r\n"),
    (recent(1), b"* 1 RECENT\r\n"),
    (expunge(22), b"* 22 EXPUNGE\r\n"),
    (flags_response(("\\Answered", "\\Flagged", "$Junk")), b"* FLAGS (\\Answered \\Flagged $Junk)\r\n"),
    (capability_response(("IMAP4rev1", "IDLE")), b"* CAPABILITY IMAP4rev1 IDLE\r\n"),
    (search_response((2, 84, 882)), b"* SEARCH 2 84 882\r\n"),
    (search_response(()), b"* SEARCH\r\n"),
    (search_response((2, 5), highest_modseq=917162500), b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"),
    (Untagged((Atom("ESEARCH"), ParenList((Atom("TAG"), String("A282"))), Atom("UID"), Atom("MIN"), 2,
               Atom("ALL"), sequence_atom([2, 10, 11]))),
     b'* ESEARCH (TAG "A282") UID MIN 2 ALL 2,10:11\r\n'),
    (list_response(("\\HasNoChildren",), "/", "INBOX"), b'* LIST (\\HasNoChildren) "/" INBOX\r\n'),
    (list_response((), "/", "日本語"), b'* LIST () "/" &ZeVnLIqe-\r\n'),
    (list_response(("\\Noselect",), None, "Sent Items"), b'* LIST (\\Noselect) NIL "Sent Items"\r\n'),
    (list_response((), "/", "a&b"), b'* LIST () "/" a&-b\r\n'),
    (list_response((), "/", "Nil"), b'* LIST () "/" "Nil"\r\n'),
    (list_response(("\\Subscribed",), "/", "Foo", (Atom("CHILDINFO"), ParenList((String("SUBSCRIBED"),)))),
     b'* LIST (\\Subscribed) "/" Foo (CHILDINFO ("SUBSCRIBED"))\r\n'),
    (Untagged((Atom("STATUS"), MailboxName("blurdybloop"), ParenList((Atom("MESSAGES"), 231, Atom("UIDNEXT"),
                                                                       44292)))),
     b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"),
    (Untagged((Atom("NAMESPACE"), ParenList((ParenList((String(""), String("/"))),)), NIL, NIL)),
     b'* NAMESPACE (("" "/")) NIL NIL\r\n'),
    (Untagged((Atom("ID"), ParenList((String("name"), String("mailprime"))))),
     b'* ID ("name" "mailprime")\r\n'),
    (Untagged((Atom("ENABLED"), Atom("CONDSTORE"))), b"* ENABLED CONDSTORE\r\n"),
    (Untagged((Atom("QUOTA"), String(""), ParenList((Atom("STORAGE"), 10, 512)))),
     b'* QUOTA "" (STORAGE 10 512)\r\n'),
    (Continuation("idling"), b"+ idling\r\n"),
    (Continuation(), b"+ \r\n"),
    (Continuation(data=b""), b"+ \r\n"),
    (Continuation(data=b"\x00challenge"), b"+ AGNoYWxsZW5nZQ==\r\n"),
])
def test_response(response: Response, expected: bytes) -> None:
    assert wire(response) == expected


def test_fetch_with_header_literal() -> None:
    header = b"Subject: hello\r\n\r\n"
    response = fetch_response(12, (
        (FetchItem.UID, 7),
        (FetchItem.FLAGS, ParenList((Flag("\\Seen"),))),
        (BodySection(Section(text="HEADER.FIELDS", fields=("SUBJECT",)), peek=True), Literal(header)),
    ))
    assert wire(response) == (b"* 12 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n"
                              b"Subject: hello\r\n\r\n)\r\n")


def test_fetch_envelope_strings_and_dates() -> None:
    when = datetime(2024, 7, 4, 9, 5, 1, tzinfo=timezone(timedelta(hours=-7)))
    response = fetch_response(1, (
        (FetchItem.INTERNALDATE, DateTime(when)),
        ("ENVELOPE", ParenList((String("Thu, 4 Jul 2024"), String('say "hi" \\ there'), NIL,
                                String("line\r\nbreak"), String(b"\xe9t\xe9"), String("")))),
        (FetchItem.RFC822_SIZE, 4422),
    ))
    assert wire(response) == (b'* 1 FETCH (INTERNALDATE "04-Jul-2024 09:05:01 -0700" ENVELOPE '
                              b'("Thu, 4 Jul 2024" "say \\"hi\\" \\\\ there" NIL {11}\r\nline\r\nbreak '
                              b'{3}\r\n\xe9t\xe9 "") RFC822.SIZE 4422)\r\n')


def test_utf8_mode_quotes_utf8_and_names_stay_utf8() -> None:
    assert wire(Untagged((String("été"),)), utf8=True) == '* "été"\r\n'.encode()
    assert wire(Untagged((String("été"),))) == "* {5}\r\nété\r\n".encode()
    assert wire(Untagged((String(b"\xff"),)), utf8=True) == b"* {1}\r\n\xff\r\n"
    assert wire(list_response((), "/", "日本語"), utf8=True) == '* LIST () "/" "日本語"\r\n'.encode()
    assert wire(list_response((), "/", "&ZeVnLIqe-"), utf8=True) == b'* LIST () "/" &ZeVnLIqe-\r\n'
    assert wire(no("a", "épuisé"), utf8=True) == "a NO épuisé\r\n".encode()
    assert wire(no("a", "épuisé")) == b"a NO ?puis?\r\n"


def test_long_strings_become_literals() -> None:
    assert wire(Untagged((String("x" * 1025),))) == b"* {1025}\r\n" + b"x" * 1025 + b"\r\n"
    assert wire(Untagged((String("\x00"),))) == b"* {1}\r\n\x00\r\n"


def test_binary_literal8() -> None:
    item = ParenList((Atom("BINARY[1]"), Literal(b"\x00\x01", binary=True)))
    assert wire(Untagged((1, Atom("FETCH"), item))) == b"* 1 FETCH (BINARY[1] ~{2}\r\n\x00\x01)\r\n"


def test_juxtaposed_lists_are_written_back_to_back() -> None:
    """RFC 3501 9: body-type-mpart = 1*body SP media-subtype, env-to = "(" 1*address ")"."""
    a = ParenList((NIL, NIL, String("a"), String("x.org")))
    b = ParenList((String(b"Jos\xc3\xa9"), NIL, String("b"), String("x.org")))
    envelope_to = Untagged((Atom("X"), ParenList((Juxtaposed((a, b)),))))
    assert wire(envelope_to) == b'* X ((NIL NIL "a" "x.org")({5}\r\nJos\xc3\xa9 NIL "b" "x.org"))\r\n'
    assert wire(envelope_to, utf8=True) == (
        b'* X ((NIL NIL "a" "x.org")("Jos\xc3\xa9" NIL "b" "x.org"))\r\n')
    one = ParenList((Juxtaposed((a,)),))
    assert wire(Untagged((one,))) == b'* ((NIL NIL "a" "x.org"))\r\n'
    part = ParenList((String("text"), String("plain"), NIL))
    multipart = ParenList((Juxtaposed((part, part)), String("mixed")))
    assert wire(Untagged((multipart,))) == b'* (("text" "plain" NIL)("text" "plain" NIL) "mixed")\r\n'
    nested = ParenList((Juxtaposed((multipart, part)), String("related")))
    assert wire(Untagged((nested,))) == (
        b'* ((("text" "plain" NIL)("text" "plain" NIL) "mixed")("text" "plain" NIL) "related")\r\n')


def test_juxtaposed_refuses_what_the_grammar_cannot_hold() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged((ParenList((Juxtaposed(()),)),)))  # 1*address: never empty
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged((Juxtaposed((Atom("A"), Atom("B"))),)))  # type: ignore[arg-type]


def test_streamed_literals_split_the_segments() -> None:
    source = object()
    body = StreamedLiteral(5000, source)
    segments = ServerConnection().send(fetch_response(3, (
        (FetchItem.UID, 9), (BodySection(), body), (FetchItem.FLAGS, ParenList(())),
    )))
    assert segments == [b"* 3 FETCH (UID 9 BODY[] {5000}\r\n", body, b" FLAGS ())\r\n"]
    assert segments[1].source is source  # type: ignore[union-attr]
    binary = StreamedLiteral(2, source, binary=True)
    assert ServerConnection().send(Untagged((binary,))) == [b"* ~{2}\r\n", binary, b"\r\n"]


def test_misuse_is_refused() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged(()))
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged((True,)))
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged((-1,)))
    with pytest.raises(LocalProtocolError):
        conn.send(ok("a", "x", ResponseCode("X", (Literal(b"x"),))))
    with pytest.raises(LocalProtocolError):
        conn.send(Untagged((Atom("X\r\n* BYE forged"),)))
    with pytest.raises(LocalProtocolError):
        conn.send(flags_response(("caf\u00e9",)))


def test_sequence_set_values() -> None:
    s = SequenceSet.of([1, 2, 3, 7, 9, 10, 4])
    assert s.to_wire() == "1:3,7,9:10,4"
    assert s.resolve(8) == [1, 2, 3, 4, 7]
    parsed_like = SequenceSet.of([]).to_wire()
    assert parsed_like == ""
