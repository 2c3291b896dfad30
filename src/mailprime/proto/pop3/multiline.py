"""POP3 multi-line responses (RFC 1939 3): lines end in CRLF, a line starting with "." gets
another "." in front (byte-stuffing), and "." CRLF ends the response.

`ContentEncoder` does this for a stored message streamed in pieces of any size, with bulk `bytes`
operations only, and cuts TOP's output after the header section and n body lines (RFC 1939 7).
Theory of operation: a CR at the end of a piece is held back until the next piece shows whether
an LF follows, so a piece handed on never ends inside a CRLF. Each piece is then normalised
(a bare LF becomes CRLF: a client splitting lines at LF must never see a line "." that ends the
response early; a bare CR is left, it ends no line), then stuffed with
`replace(b"\\n.", b"\\n..")`, plus one "." when the piece itself starts a line with a dot.
For TOP, the end of the header section is the first empty line: an LF followed by CRLF inside
the piece, or a piece starting with CRLF right after a line end; the body lines are counted by
their LFs. Memory: the piece being encoded plus one held-back octet.
"""

from __future__ import annotations

from collections.abc import Iterable

TERMINATOR = b".\r\n"


class ContentEncoder:
    """Encodes one message's content for RETR (`body_lines` None) or TOP (`body_lines` = n)."""

    __slots__ = ("_cr", "_in_header", "_line_start", "_lines_left", "done", "started")

    def __init__(self, body_lines: int | None = None) -> None:
        self._lines_left = body_lines
        self._in_header = body_lines is not None  # only TOP needs to find the header's end
        self._cr = False  # a CR held back from the previous piece
        self._line_start = True  # the next octet out starts a line
        self.done = False  # TOP has sent all it must: later pieces are ignored
        self.started = False  # some content was given

    def encode(self, piece: bytes) -> bytes:
        if self.done or not piece:
            return b""
        self.started = True
        data = b"\r" + piece if self._cr else piece
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
            if not data:
                return b""
        newlines = data.count(b"\n")
        if newlines and newlines != data.count(b"\r\n"):
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._lines_left is not None:
            data = self._cut(data)
            if not data:
                return b""
        # split + join stuffs faster than replace (which counts the matches first), and gives
        # back `data` itself when there is nothing to stuff.
        out = b"\n..".join(data.split(b"\n.")) if newlines else data
        if self._line_start and data.startswith(b"."):
            out = b"." + out
        self._line_start = data.endswith(b"\n")
        return out

    def finish(self) -> bytes:
        """The end of the response: a CRLF if the content did not end a line, then "." CRLF."""
        out = b""
        if self._cr and not self.done:
            out = b"\r"
            self._line_start = False
        if not self._line_start:
            out += b"\r\n"
        self.done = True
        return out + TERMINATOR

    def _cut(self, data: bytes) -> bytes:
        """TOP: keeps the header section, the empty line and `_lines_left` body lines."""
        start = 0
        if self._in_header:
            if self._line_start and data.startswith(b"\r\n"):
                start = 2
            else:
                blank = data.find(b"\n\r\n")
                if blank < 0:
                    return data
                start = blank + 3
            self._in_header = False
        left = self._lines_left
        assert left is not None
        if left == 0:
            self.done = True
            return data[:start]
        count = data.count(b"\n", start)
        if count < left:
            self._lines_left = left - count
            return data
        end = start - 1
        for _ in range(left):
            end = data.find(b"\n", end + 1)
        self._lines_left = 0
        self.done = True
        return data[:end + 1]


def encode_whole(content: bytes) -> bytes:
    """A whole RETR response body, "." CRLF included: what `ContentEncoder` makes of `content`
    in any pieces. For a server that encodes a message before the client asks for it
    (`ServerConnection.send_encoded`)."""
    encoder = ContentEncoder()
    return encoder.encode(content) + encoder.finish()


def listing(status: bytes, lines: Iterable[str]) -> bytes:
    """A short multi-line response (CAPA, LIST, UIDL): the status line, the lines, the end."""
    out = bytearray(status)
    for line in lines:
        if line.startswith("."):
            out += b"."
        out += line.encode("utf-8") + b"\r\n"
    return bytes(out + TERMINATOR)
