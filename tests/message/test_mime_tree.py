"""The MIME tree: header fields with offsets, structured-value scanning, multipart splitting,
encapsulated messages, limits and part numbers; plus fuzzing (never raises, ranges nest)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailprime.message.header_lexer import (
    HeaderScanner,
    first_value,
    header_end,
    named_fields,
    parse_fields,
    select_fields,
    unfold,
    values,
)
from mailprime.message.mime_tree import (
    MAX_DEPTH,
    MAX_PARTS,
    Disposition,
    MimePart,
    PartKind,
    find_part,
    header_value,
    join_continuations,
    parse_content_type,
    parse_language,
    parse_message,
    walk,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def body(message: bytes, tree: MimePart, *path: int) -> bytes:
    part = find_part(tree, path)
    assert part is not None
    return part.body(message)


# Header fields ----------------------------------------------------------------------------------

def test_fields_keep_offsets_folding_and_order() -> None:
    header = crlf("Subject: a\n folded\nX-Empty:\nTo : b@c\n\nbody\n")
    fields = parse_fields(header)
    assert [f.name for f in fields] == [b"Subject", b"X-Empty", b"To"]
    assert fields[0].raw(header) == b"Subject: a\r\n folded\r\n"
    assert fields[0].value(header) == b"a folded"
    assert fields[1].value(header) == b""
    assert fields[2].value(header) == b"b@c"  # RFC 5322 4.5 obs: WSP before the colon
    assert fields[2].end == header.index(b"\r\n\r\n") + 2


def test_fields_junk_lines_and_leading_continuation_have_no_name() -> None:
    header = b" leading continuation\r\nno colon here\r\nA: 1\r\n\xff\xfe: 8bit name\r\n"
    fields = parse_fields(header)
    assert [f.name for f in fields] == [b"", b"", b"A", b""]
    assert b"".join(f.raw(header) for f in fields) == header


def test_fields_stop_at_the_empty_line_and_tolerate_bare_lf() -> None:
    header = b"A: 1\nB: 2\n\nC: not a header\n"
    assert [f.name for f in parse_fields(header)] == [b"A", b"B"]
    assert first_value(header, parse_fields(header), b"b") == b"2"
    assert first_value(header, parse_fields(header), b"c") is None


def test_values_and_unfold() -> None:
    header = crlf("X: one\nx: two\n  more\n")
    assert list(values(header, parse_fields(header), b"X")) == [b"one", b"two  more"]
    assert unfold(b"  a\r\n\tb \r\n") == b"a\tb "


def test_header_end() -> None:
    assert header_end(b"A: 1\r\n\r\nbody") == 8
    assert header_end(b"A: 1\n\nbody") == 6
    assert header_end(b"\r\nbody") == 2
    assert header_end(b"A: 1\r\nB: 2") == 10
    assert header_end(b"X\r\n\r\nA: 1\r\n\r\n", 5) == 13


def test_named_and_selected_fields() -> None:
    header = crlf("Content-Type: text/plain\nX-A: 1\n 2\ncontent-id : <x>\nX-B: 3\n\nContent-Foo: body\n")
    content = named_fields(header, (b"content-",), prefix=True)
    assert [f.name for f in content] == [b"Content-Type", b"content-id"]
    assert [f.value(header) for f in named_fields(header, (b"x-a", b"X-B"))] == [b"1 2", b"3"]
    assert named_fields(header, (b"", b"a:b", b"x y")) == []
    assert select_fields(header, (b"x-a", b"content-id")) == b"X-A: 1\r\n 2\r\ncontent-id : <x>\r\n"
    assert select_fields(header, (b"x-a", b"content-type"), exclude=True) == (
        b"content-id : <x>\r\nX-B: 3\r\n")
    assert select_fields(header, (), exclude=True) == header[:header.index(b"\r\n\r\n") + 2]
    assert select_fields(header, ()) == b""


HEADER_NOISE = st.lists(st.sampled_from([
    b"A: 1", b"a:", b"B : x", b"Content-Type: t/p", b"content-x:y", b"\r\n", b"\n", b" ", b"\t", b"junk",
    b":", b"\r\n\r\n", b"C", b"\xff", b"\r",
]), max_size=40).map(b"".join)


@given(HEADER_NOISE, st.sets(st.sampled_from([b"a", b"B", b"c", b"content-type", b"", b"a b"])))
def test_named_and_selected_fields_agree_with_parse_fields(header: bytes, names: set[bytes]) -> None:
    wanted = {n.lower() for n in names}
    parsed = [f for f in parse_fields(header) if f.name]
    expected = [f for f in parsed if f.name.lower() in wanted]
    assert named_fields(header, sorted(names)) == expected
    assert select_fields(header, sorted(names)) == b"".join(f.raw(header) for f in expected)
    assert select_fields(header, sorted(names), exclude=True) == b"".join(
        f.raw(header) for f in parsed if f.name.lower() not in wanted)
    assert named_fields(header, (b"content-",), prefix=True) == [
        f for f in parsed if f.name.lower().startswith(b"content-")]


def test_scanner_comments_quoted_strings_and_phrases() -> None:
    scanner = HeaderScanner(b' (outer (nested) \\) x) "a \\"q\\" b" John Q. Public <')
    scanner.skip_cfws()
    assert scanner.last_comment == b"outer (nested) ) x"
    assert scanner.phrase() == b'a "q" b John Q. Public'
    assert scanner.peek() == ord("<")
    assert HeaderScanner(b'"unterminated').quoted_string() == b"unterminated"
    unterminated = HeaderScanner(b"(never closed")
    unterminated.skip_cfws()
    assert unterminated.at_end()
    assert unterminated.peek() == -1


def test_scanner_skip_to_ignores_separators_in_quotes_and_comments() -> None:
    scanner = HeaderScanner(b'junk "a;b" (c;d) ; next')
    scanner.skip_to(b";")
    assert scanner.data[scanner.pos:] == b"; next"


# Content-Type and friends ------------------------------------------------------------------------

def test_content_type_with_comments_quoted_and_loose_values() -> None:
    assert parse_content_type(b'text/plain (comment); charset="utf-8"; format=flowed') == (
        b"text", b"plain", ((b"charset", b"utf-8"), (b"format", b"flowed")))
    assert parse_content_type(b"multipart/alternative; boundary=----=_Part_1_2.3") == (
        b"multipart", b"alternative", ((b"boundary", b"----=_Part_1_2.3"),))
    assert parse_content_type(b"TEXT / HTML ;; junk ; a = b") == (b"TEXT", b"HTML", ((b"a", b"b"),))


def test_content_type_without_subtype_is_unusable() -> None:
    assert parse_content_type(b"text") is None
    assert parse_content_type(b";;;") is None
    assert parse_content_type(b"text/") is None


def test_rfc2231_continuations_are_joined_as_written() -> None:
    # RFC 2231 4.1's example, and a plain continuation.
    params = parse_content_type(
        b"application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20;"
        b" title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2=\"isn't it!\"")
    assert params is not None
    joined = b"us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn't it!"
    assert params[2] == ((b"title*", joined),)
    sections = [(b"a", b"1"), (b"name*1", b"b.txt"), (b"name*0", b"a"), (b"name*3", b"gap")]
    assert join_continuations(sections) == (
        (b"a", b"1"), (b"name", b"ab.txt"))
    assert join_continuations([(b"name*1", b"orphan")]) == ()
    assert join_continuations([(b"name*", b"utf-8''%C3%A9")]) == ((b"name*", b"utf-8''%C3%A9"),)


def test_language_list() -> None:
    assert parse_language(b"en-US (comment), de") == (b"en-US", b"de")
    assert parse_language(b"  ") is None


# Tree shapes ------------------------------------------------------------------------------------

def test_single_part_message() -> None:
    message = crlf("Subject: hi\n\nline 1\nline 2\n")
    tree = parse_message(message)
    assert tree.kind is PartKind.LEAF
    assert (tree.header_start, tree.body_start, tree.body_end) == (0, 15, len(message))
    assert tree.header(message) == b"Subject: hi\r\n\r\n"
    assert tree.body(message) == b"line 1\r\nline 2\r\n"
    assert (tree.body_size, tree.lines) == (16, 2)
    assert (tree.content.media_type, tree.content.media_subtype) == (b"text", b"plain")
    assert tree.is_text and tree.charset == "us-ascii" and tree.transfer_encoding == "7bit"


def test_header_only_and_empty_header() -> None:
    only = b"From: a@b\r\nSubject: x"
    tree = parse_message(only)
    assert (tree.body_start, tree.body_end) == (len(only), len(only))
    empty_header = b"\r\nbody\r\n"
    tree = parse_message(empty_header)
    assert tree.header(empty_header) == b"\r\n"
    assert tree.body(empty_header) == b"body\r\n"
    assert parse_message(b"").body_size == 0


MULTIPART = crlf("""From: a@b
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8

plain
--inner \t
Content-Type: text/html

<p>html</p>
--inner--
inner epilogue
--outer
Content-Type: message/rfc822

Subject: inner message
Content-Type: multipart/mixed; boundary=deep

--deep

deep part
--deep--

--outer--
epilogue
""")


def test_nested_multiparts_and_encapsulated_message() -> None:
    tree = parse_message(MULTIPART)
    assert tree.kind is PartKind.MULTIPART
    assert [p.kind for p in tree.parts] == [PartKind.MULTIPART, PartKind.MESSAGE]
    assert body(MULTIPART, tree, 1, 1) == b"plain"
    assert body(MULTIPART, tree, 1, 2) == b"<p>html</p>"  # transport padding after "--inner"
    assert body(MULTIPART, tree, 1) == (b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain\r\n"
                                        b"--inner \t\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
                                        b"--inner--\r\ninner epilogue")
    assert body(MULTIPART, tree, 2).startswith(b"Subject: inner message\r\n")
    assert body(MULTIPART, tree, 2).endswith(b"--deep--\r\n")
    assert body(MULTIPART, tree, 2, 1) == b"deep part"
    inner = tree.parts[1].parts[0]
    assert header_value(MULTIPART, inner, b"subject") == b"inner message"
    assert tree.parts[0].parts[0].charset == "utf-8"


def test_preamble_and_epilogue_belong_to_no_part() -> None:
    tree = parse_message(MULTIPART)
    for part in walk(tree):
        text = part.body(MULTIPART) if part.kind is PartKind.LEAF else b""
        assert b"preamble" not in text and b"epilogue" not in text


def test_missing_close_delimiter_ends_at_the_enclosing_body() -> None:
    message = crlf("Content-Type: multipart/mixed; boundary=x\n\n--x\n\none\n--x\nContent-Type:"
         " text/html\n\ntwo\n")
    tree = parse_message(message)
    assert [p.body(message) for p in tree.parts] == [b"one", b"two\r\n"]
    assert [p.lines for p in tree.parts] == [0, 1]


def test_multipart_without_parts_or_boundary() -> None:
    for text in ("Content-Type: multipart/mixed; boundary=never\n\njust text\n",
                 "Content-Type: multipart/mixed\n\n--x\n\nhi\n"):
        tree = parse_message(crlf(text))
        assert tree.kind is PartKind.MULTIPART
        assert tree.parts == ()


def test_empty_parts_between_adjacent_delimiters() -> None:
    message = crlf("Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n\n--x--\n")
    tree = parse_message(message)
    assert [(p.body_size, p.header(message)) for p in tree.parts] == [(0, b""), (0, b"")]


def test_delimiter_must_be_the_whole_line() -> None:
    message = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n--bx is text\n--b-- \n")
    tree = parse_message(message)
    assert [p.body(message) for p in tree.parts] == [b"--bx is text"]


def test_outer_boundary_prefix_of_inner_boundary() -> None:
    message = crlf("Content-Type: multipart/mixed; boundary=foo\n\n--foo\n"
                   "Content-Type: multipart/mixed;"
                   " boundary=foobar\n\n--foobar\n\ninner\n--foobar--\n--foo--\n")
    tree = parse_message(message)
    assert len(tree.parts) == 1
    assert body(message, tree, 1, 1) == b"inner"


def test_bare_lf_message() -> None:
    message = b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<b>\n--x--\n"
    tree = parse_message(message)
    assert body(message, tree, 1) == b"<b>"
    assert tree.parts[0].content.media_subtype == b"html"


def test_digest_parts_default_to_message_rfc822() -> None:
    message = crlf("Content-Type: multipart/digest; boundary=x\n\n--x\n\nFrom: c@d\nSubject:"
         " s\n\nbody\n--x--\n")
    tree = parse_message(message)
    part = tree.parts[0]
    assert part.kind is PartKind.MESSAGE
    assert (part.content.media_type, part.content.media_subtype) == (b"message", b"rfc822")
    assert part.parts[0].body(message) == b"body"


def test_message_global_is_an_encapsulated_message() -> None:
    message = crlf("Content-Type: message/global\n\nSubject: s\n\nbody\n")
    assert parse_message(message).kind is PartKind.MESSAGE


def test_content_fields_first_occurrence_wins_and_defaults() -> None:
    message = crlf("Content-Type: text/html; charset=ISO-8859-1\nContent-Type: image/png\n"
                   "Content-Transfer-Encoding: Quoted-Printable (comment)\nContent-Disposition: attachment;"
                   " filename=\"a b.txt\"\nContent-ID: <id@x>\nContent-Description: d\nContent-MD5: m\n"
                   "Content-Language: en\nContent-Location: http://x/\n\nbody")
    content = parse_message(message).content
    assert (content.media_type, content.media_subtype) == (b"text", b"html")
    assert content.encoding == b"Quoted-Printable"
    assert content.disposition == Disposition(b"attachment", ((b"filename", b"a b.txt"),))
    assert (content.content_id, content.description, content.md5, content.location) == (
        b"<id@x>", b"d", b"m", b"http://x/")
    assert content.language == (b"en",)
    tree = parse_message(message)
    assert (tree.charset, tree.transfer_encoding) == ("iso-8859-1", "quoted-printable")


def test_invalid_transfer_encoding_counts_as_absent() -> None:
    tree = parse_message(crlf("Content-Transfer-Encoding: ?invalid\n\nx"))
    assert tree.content.encoding is None
    assert tree.transfer_encoding == "7bit"


def test_nesting_beyond_the_limit_becomes_opaque() -> None:
    depth = MAX_DEPTH + 5
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    message = crlf(head + "\ndeepest\n")
    tree = parse_message(message)
    levels = 0
    node = tree
    while node.kind is PartKind.MULTIPART:
        levels += 1
        node = node.parts[0]
    assert levels == MAX_DEPTH
    assert (node.content.media_type, node.content.media_subtype) == (b"application", b"octet-stream")
    assert node.body(message).endswith(b"deepest\r\n")


def test_part_count_is_bounded() -> None:
    message = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n\r\np\r\n" * (MAX_PARTS + 50)
    tree = parse_message(message)
    assert len(tree.parts) == MAX_PARTS
    assert tree.parts[-1].body_end == len(message)  # the last part keeps the rest


# Part numbers (RFC 3501 6.4.5) ------------------------------------------------------------------

def test_find_part_rules() -> None:
    tree = parse_message(MULTIPART)
    assert find_part(tree, ()) is tree
    assert find_part(tree, (1, 2)) is tree.parts[0].parts[1]
    assert find_part(tree, (2,)) is tree.parts[1]
    assert find_part(tree, (2, 1)) is tree.parts[1].parts[0].parts[0]  # into the encapsulated message
    assert find_part(tree, (3,)) is None
    assert find_part(tree, (0,)) is None
    # Any part that is not a multipart is its own part 1, once (as Dovecot answers BODY[1.1.1]).
    assert find_part(tree, (1, 1, 1)) is tree.parts[0].parts[0]
    assert find_part(tree, (1, 1, 1, 1)) is None
    assert find_part(tree, (1, 1, 2)) is None
    single = parse_message(b"Subject: x\r\n\r\nbody")
    assert find_part(single, (1,)) is single  # part 1 of a non-multipart message is its body
    assert find_part(single, (2,)) is None
    assert find_part(single, (1, 1)) is None


def test_find_part_through_nested_messages() -> None:
    message = crlf("Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: s\n\nHello\n")
    tree = parse_message(message)
    assert body(message, tree, 1).startswith(b"Content-Type: message/rfc822")
    assert body(message, tree, 1, 1) == b"Subject: s\r\n\r\nHello\r\n"
    assert body(message, tree, 1, 1, 1) == b"Hello\r\n"
    assert find_part(tree, (1, 1, 1, 1)) is None


# Fuzzing ----------------------------------------------------------------------------------------

def _assert_ranges_nest(message: bytes, tree: MimePart) -> None:
    stack = [(tree, 0, len(message))]
    while stack:
        part, low, high = stack.pop()
        assert low <= part.header_start <= part.body_start <= part.body_end <= high
        assert part.lines == message.count(b"\n", part.body_start, part.body_end)
        if part.kind is PartKind.MESSAGE:
            assert len(part.parts) == 1
        if part.kind is PartKind.LEAF:
            assert part.parts == ()
        previous_end = part.body_start
        for child in part.parts:
            assert child.header_start >= previous_end  # siblings in order, never overlapping
            previous_end = child.body_end
            stack.append((child, part.body_start, part.body_end))


MIME_ALPHABET = st.sampled_from([
    b"\r\n", b"\n", b"--", b"--b", b"--b--", b"--c", b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/alternative; boundary=\"c\"\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/digest; boundary=b\r\n", b"Content-Type: text/plain\r\n", b": ", b" ", b"x",
    b"\r\n\r\n", b"Subject: s\r\n", b"\t", b"\x00", b"\xff",
])


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_and_ranges_nest(data: bytes) -> None:
    _assert_ranges_nest(data, parse_message(data))


@given(st.lists(MIME_ALPHABET, max_size=80).map(b"".join))
def test_mime_shaped_noise_never_raises_and_ranges_nest(data: bytes) -> None:
    tree = parse_message(data)
    _assert_ranges_nest(data, tree)
    for part in walk(tree):
        part.header_fields(data)
        assert part.charset and part.transfer_encoding


@st.composite
def mime_trees(draw: st.DrawFn, depth: int = 0) -> tuple[bytes, object]:
    """A well-formed entity and its expected shape: bytes for a leaf body, a list for a
    multipart, a 1-tuple for a message/rfc822."""
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "message"] if depth < 4 else ["leaf"]))
    if kind == "leaf":
        text = draw(st.binary(max_size=30).filter(
            lambda b: b"--" not in b and b"\n" not in b and b"\r" not in b))
        return b"Content-Type: text/plain\r\n\r\n" + text, text
    if kind == "message":
        inner, shape = draw(mime_trees(depth + 1))
        return b"Content-Type: message/rfc822\r\n\r\n" + inner, (shape,)
    boundary = b"b%d" % depth
    children = draw(st.lists(mime_trees(depth + 1), min_size=1, max_size=3))
    parts = b"".join(b"--" + boundary + b"\r\n" + child + b"\r\n" for child, _ in children)
    entity = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\npreamble\r\n" + parts
              + b"--" + boundary + b"--\r\nepilogue")
    return entity, [shape for _, shape in children]


def _check_shape(message: bytes, part: MimePart, shape: object) -> None:
    if isinstance(shape, bytes):
        assert part.kind is PartKind.LEAF
        assert part.body(message) == shape
    elif isinstance(shape, tuple):
        assert part.kind is PartKind.MESSAGE
        _check_shape(message, part.parts[0], shape[0])
    else:
        assert isinstance(shape, list)
        assert part.kind is PartKind.MULTIPART
        assert len(part.parts) == len(shape)
        for child, child_shape in zip(part.parts, shape, strict=True):
            _check_shape(message, child, child_shape)


@given(mime_trees())
def test_well_formed_trees_parse_back(entity: tuple[bytes, object]) -> None:
    message, shape = entity
    tree = parse_message(message)
    _check_shape(message, tree, shape)
    _assert_ranges_nest(message, tree)
