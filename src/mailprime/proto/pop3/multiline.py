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

`encode_known` is the same response for a whole message whose line ends (and dot lines) were
found when it was stored: those scans (two counts and the stuffing's search, ~2.5 ns an octet in
CPython, most of a RETR's cost) are not made again, and the content goes out as it is or in
slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

TERMINATOR = b".\r\n"
# A part of a response; the parts are written back to back (a server joins them, or hands them
# to one writev), so a stored message goes out without a copy of its own.
Piece = bytes | memoryview
# `encode_known` cuts the content into at most this many slices and stuffed dots.
_MAX_PIECES = 128


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


def encode_known(content: bytes, *, crlf_only: bool, dot_lines: bool,
                 dot_offsets: Sequence[int] | None = None) -> list[Piece]:
    """What `encode_whole(content)` makes, as pieces to be written back to back, for content
    whose line ends the caller already knows (a store can find them once, when the content is
    written): `crlf_only`, every LF in it follows a CR; `dot_lines` False, no line starts with
    "."; `dot_offsets`, if given, the offsets of exactly the lines that start with ".". What
    is known is not searched for again, and the content is not copied: the pieces are the
    content itself, or slices of it around the dots stuffed in, and the end of the response.
    A caller that says of content what is not so gets a wrong response; with `crlf_only` False
    this is `encode_whole`."""
    if not crlf_only:
        return [encode_whole(content)]
    # As `ContentEncoder.finish` ends it: a CRLF unless the content ended a line (a last lone
    # CR is content), then the terminator.
    end = TERMINATOR if not content or content.endswith(b"\n") else b"\r\n" + TERMINATOR
    if not dot_lines:
        return [content, end] if content else [end]
    if dot_offsets is None or len(dot_offsets) > _MAX_PIECES // 2:
        dot_offsets = _dot_offsets(content)
        if dot_offsets is None:  # dots everywhere: one stuffed copy beats many slices
            body = b"\n..".join(content.split(b"\n."))
            return [b"." + body if content.startswith(b".") else body, end]
    view = memoryview(content)
    pieces: list[Piece] = []
    start = 0
    for offset in dot_offsets:
        if offset > start:
            pieces.append(view[start:offset])
        pieces.append(b".")  # the stuffed one; the line's own dot starts the next slice
        start = offset
    pieces.append(view[start:] if start else content)
    pieces.append(end)
    return pieces


def _dot_offsets(content: bytes) -> list[int] | None:
    """The offsets of the lines of `content` that start with "." (None past `_MAX_PIECES`/2)."""
    offsets = [0] if content.startswith(b".") else []
    found = content.find(b"\n.")
    while found >= 0:
        if len(offsets) >= _MAX_PIECES // 2:
            return None
        offsets.append(found + 1)
        found = content.find(b"\n.", found + 2)
    return offsets


def listing(status: bytes, lines: Iterable[str]) -> bytes:
    """A short multi-line response (CAPA, LIST, UIDL): the status line, the lines, the end."""
    out = bytearray(status)
    for line in lines:
        if line.startswith("."):
            out += b"."
        out += line.encode("utf-8") + b"\r\n"
    return bytes(out + TERMINATOR)
