"""The reference writer of the neutral IMAP value form."""

from __future__ import annotations

import pytest

from mailprime.message.imap_values import MAX_QUOTED, render


def test_render_values() -> None:
    assert render(None) == b"NIL"
    assert render(42) == b"42"
    assert render(b'a "q" \\') == b'"a \\"q\\" \\\\"'
    assert render(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert render(b"caf\xc3\xa9") == b"{5}\r\ncaf\xc3\xa9"
    assert render(b"caf\xc3\xa9", utf8=True) == b'"caf\xc3\xa9"'
    assert render(b"\xff", utf8=True) == b"{1}\r\n\xff"
    assert render((b"a", None, (1, 2), [(b"x",), (b"y",)], b"z")) == b'("a" NIL (1 2) ("x")("y") "z")'
    with pytest.raises(TypeError):
        render(True)


def test_long_strings_become_literals() -> None:
    assert render(b"a" * MAX_QUOTED).startswith(b'"')
    assert render(b"a" * (MAX_QUOTED + 1)).startswith(b"{%d}\r\n" % (MAX_QUOTED + 1))
    assert render(b"nul\x00") == b"{4}\r\nnul\x00"
