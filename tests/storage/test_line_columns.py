"""The line facts a blob row keeps for readers that send its content as a multi-line body
(`streams.line_columns`), pure: the form and the offsets of the dot lines, exactly as the POP3
encoder would find them, whatever the content."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailprime.proto.pop3.multiline import encode_known, encode_whole
from mailprime.storage.ports import LineForm
from mailprime.storage.sql.streams import MAX_DOT_LINES, dot_line_offsets, line_columns


def facts(data: bytes) -> tuple[LineForm | None, tuple[int, ...] | None]:
    columns = line_columns(data)
    form = columns["line_form"]
    dots = columns["dot_lines"]
    assert form is None or isinstance(form, int)
    assert dots is None or isinstance(dots, bytes)
    return (None if form is None else LineForm(form)), dot_line_offsets(dots)


def test_each_form_and_its_dot_lines() -> None:
    assert facts(b"Subject: x\r\n\r\nbody\r\n") == (LineForm.AS_STORED, None)
    assert facts(b"") == (LineForm.AS_STORED, None)
    assert facts(b"a\r\rb\r\nno end") == (LineForm.AS_STORED, None)  # a bare CR ends no line
    assert facts(b".a\r\nb\r\n..c\r\nd.e\r\n.") == (LineForm.DOT_LINES, (0, 7, 17))
    assert facts(b"a\n.b\r\n") == (LineForm.BARE_LF, None)
    assert line_columns(None) == {"line_form": None, "dot_lines": None}  # in a spool file


def test_too_many_dot_lines_are_not_kept() -> None:
    many = b"x\r\n" + b".\r\n" * MAX_DOT_LINES
    assert facts(many) == (LineForm.DOT_LINES, tuple(range(3, 3 + 3 * MAX_DOT_LINES, 3)))
    assert facts(many + b".\r\n") == (LineForm.DOT_LINES, None)  # the reader finds them
    assert dot_line_offsets(None) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b" ", b"\r\n.\r\n"]),
                max_size=120).map(b"".join))
def test_what_a_row_keeps_encodes_as_the_octets_would(content: bytes) -> None:
    form, dots = facts(content)
    assert form is not None
    if form is LineForm.BARE_LF:
        assert content.count(b"\n") != content.count(b"\r\n")
        return
    pieces = encode_known(content, crlf_only=True, dot_lines=form is LineForm.DOT_LINES,
                          dot_offsets=dots)
    assert b"".join(pieces) == encode_whole(content)
