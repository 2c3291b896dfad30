"""Message content streamed in and out with bounded memory: the `SpoolWriter` and `BlobReader`
ports over the spool (spool.py). Every blocking file operation runs off the event loop, through
the `Offload` the store gives (its spool I/O thread pool). And `line_columns`, the facts about
a content's line ends that its blob row keeps for readers that send it as a multi-line body.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from mailprime.domain.errors import DomainError, StorageError
from mailprime.domain.mail import MessageContent, SpooledContent
from mailprime.storage.ports import LineForm
from mailprime.storage.sql.spool import ReadFile, Spool, TempFile

R = TypeVar("R")

# Once a body is in a file, buffered octets are written out in pieces of about this size: large
# enough that a 50 MB body costs ~200 thread hops, small enough to be noise next to inline_max.
FLUSH_SIZE = 256 * 1024
# Pieces handed to readers (an SMTP client re-chunks them for BDAT anyway).
READ_CHUNK = 128 * 1024


# Lines starting with "." whose offsets a blob row keeps (`dot_lines`); a message with more
# (rare: a dotted list, a quoted diff) keeps none and its reader finds them itself.
MAX_DOT_LINES = 64
_OFFSET = struct.Struct("<I")
_UNPACKERS: dict[int, struct.Struct] = {}  # by the length of a packed `dot_lines`


def line_columns(data: bytes | None) -> dict[str, object]:
    """A blob row's `line_form` and `dot_lines` for inline content `data` (None: content in a
    spool file, streamed and checked by its reader as it goes: both NULL); `line_facts` as a
    dict of the two columns."""
    form, dots = line_facts(data)
    return {"line_form": form, "dot_lines": dots}


def line_facts(data: bytes | None) -> tuple[int | None, bytes | None]:
    """(line_form, dot_lines) of a blob row for inline content `data` (see `line_columns`).

    What the content needs before it goes out as a multi-line body (see `LineForm`), found once
    where the content is written instead of by every reader each time it sends it. The test is
    the one the POP3 encoder makes (`proto.pop3.multiline`): as many LFs as CRLFs means no bare
    LF (a bare CR ends no line). For DOT_LINES, `dot_lines` holds the offsets of the lines that
    start with "." (little-endian 32-bit), so that a reader can stuff them without searching the
    octets again. One pass in C (storage/sql/_lines.c) where it is built: ~1 us of a 13 KB
    message where the Python searches took ~25 us, on the writer thread, for every accept."""
    if data is None:
        return None, None
    bare_lf, dots = _scan(data, MAX_DOT_LINES)
    if bare_lf:
        return _BARE_LF, None
    if dots == b"":
        return _AS_STORED, None
    return _DOT_LINES, dots


_BARE_LF, _DOT_LINES, _AS_STORED = int(LineForm.BARE_LF), int(LineForm.DOT_LINES), int(LineForm.AS_STORED)


def scan_py(data: bytes, limit: int) -> tuple[bool, bytes | None]:
    """(bare LF, dot lines) as `_lines.scan` finds them: whether some LF has no CR before it
    and, if none has, the offsets of the lines starting with "." packed (b"": none; None: more
    than `limit`, or content too long for 32-bit offsets). Bulk scans at ~1 ns an octet, but
    of a two-octet pattern: the C version is ~10x faster."""
    if data.count(b"\n") != data.count(b"\r\n"):
        return True, None
    offsets = [0] if data.startswith(b".") else []
    found = data.find(b"\n.")
    while found >= 0 and len(offsets) <= limit:
        offsets.append(found + 1)
        found = data.find(b"\n.", found + 2)
    if len(offsets) > limit or (offsets and len(data) > 0xFFFF_FFFF):
        return False, None
    return False, b"".join(map(_OFFSET.pack, offsets))


_scan: Callable[[bytes, int], tuple[bool, bytes | None]]
try:  # storage/sql/_lines.c, built by `pip install -e .` (optional, like the message helpers)
    from mailprime.storage.sql._lines import scan as _scan
except ImportError:  # pragma: no cover - only where it could not be built
    _scan = scan_py


def dot_line_offsets(packed: bytes | None) -> tuple[int, ...] | None:
    """A blob row's `dot_lines` as offsets (None stays None). One unpack per row of a listing:
    the struct for each count is made once."""
    if packed is None:
        return None
    unpacker = _UNPACKERS.get(len(packed))
    if unpacker is None:
        unpacker = _UNPACKERS[len(packed)] = struct.Struct(f"<{len(packed) // _OFFSET.size}I")
    return unpacker.unpack(packed)


class Offload(Protocol):
    """Runs a blocking function on a worker thread; raises StorageError once the store closed."""

    def __call__(self, fn: Callable[[], R], /) -> Awaitable[R]: ...


class _State(enum.Enum):
    MEMORY = "memory"
    FILE = "file"
    FINISHED = "finished"
    DISCARDED = "discarded"


class BufferedSpoolWriter:
    """Implements storage.ports.SpoolWriter.

    Theory of operation. MEMORY: octets collect in a buffer while the total is at most
    `inline_max` (most messages never leave this state, and never touch the disk). The write that
    crosses the limit creates a locked temporary spool file and moves to FILE: from then on the
    buffer is handed to a thread and written out whenever it holds FLUSH_SIZE octets, so memory
    stays under inline_max + FLUSH_SIZE + one chunk whatever the message size. `finish` returns
    the bytes (MEMORY) or writes the rest, fsyncs and closes the file and returns SpooledContent
    (FILE); either way -> FINISHED. `discard` from any state -> DISCARDED and deletes the file,
    unless an accept already adopted (renamed) it. A failed write discards.
    """

    def __init__(self, spool: Spool, inline_max: int, offload: Offload) -> None:
        self._spool = spool
        self._inline_max = inline_max
        self._offload = offload
        self._state = _State.MEMORY
        self._buf = bytearray()
        self._file: TempFile | None = None
        self._size = 0
        self._8bit = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if self._state not in (_State.MEMORY, _State.FILE):
            raise StorageError(f"body writer is {self._state.value}")
        self._size += len(data)
        if not self._8bit and not data.isascii():
            self._8bit = True
        self._buf += data
        try:
            if self._file is None:
                if len(self._buf) <= self._inline_max:
                    return
                self._file = await self._offload(self._spool.create_temp)
                self._state = _State.FILE
            if len(self._buf) >= FLUSH_SIZE:
                pending, self._buf = self._buf, bytearray()
                file = self._file
                await self._offload(lambda: file.write(pending))
        except DomainError:
            await self.discard()
            raise

    async def finish(self) -> MessageContent:
        if self._state is _State.MEMORY:
            self._state = _State.FINISHED
            content = bytes(self._buf)
            self._buf = bytearray()
            return content
        if self._state is not _State.FILE or self._file is None:
            raise StorageError(f"body writer is {self._state.value}")
        rest, self._buf = self._buf, bytearray()
        file = self._file
        try:
            await self._offload(lambda: file.seal(rest))
        except DomainError:
            await self.discard()
            raise
        self._state = _State.FINISHED
        return SpooledContent(ticket=file.ticket, body_size=self._size, body_8bit=self._8bit)

    async def discard(self) -> None:
        self._state = _State.DISCARDED
        self._buf = bytearray()
        file, self._file = self._file, None
        if file is None:
            return
        try:
            await self._offload(file.remove)
        except StorageError:  # the store closed its threads: a quick unlink right here
            file.remove()


class InlineBlob:
    """Implements storage.ports.BlobReader for content kept in the database (<= inline_max)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def chunks(self) -> _MemoryChunks:
        return _MemoryChunks(self._data)

    async def read_head(self, limit: int) -> bytes:
        return self._data[:limit]


class SpooledBlob:
    """Implements storage.ports.BlobReader for a spool file (and the prefix kept in its row)."""

    def __init__(self, prefix: bytes, file: ReadFile, offload: Offload) -> None:
        self._prefix = prefix
        self._file = file
        self._offload = offload

    @property
    def size(self) -> int:
        return len(self._prefix) + self._file.size

    def chunks(self) -> _FileChunks:
        return _FileChunks(self._prefix, self._file, self._offload)

    async def read_head(self, limit: int) -> bytes:
        head = self._prefix[:limit]
        want = min(limit - len(head), self._file.size)
        if want > 0:
            file = self._file
            head += await self._offload(lambda: file.pread(0, want))
        return head


class _MemoryChunks:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    def __aiter__(self) -> _MemoryChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._offset >= len(self._view):
            raise StopAsyncIteration
        start = self._offset
        self._offset += READ_CHUNK
        return bytes(self._view[start:start + READ_CHUNK])


class _FileChunks:
    """Positional reads, so that several passes over one open file never disturb each other."""

    def __init__(self, prefix: bytes, file: ReadFile, offload: Offload) -> None:
        self._prefix = prefix
        self._file = file
        self._offload = offload
        self._offset = 0

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._prefix:
            prefix, self._prefix = self._prefix, b""
            return prefix
        offset, file = self._offset, self._file
        if offset >= file.size:
            raise StopAsyncIteration
        length = min(READ_CHUNK, file.size - offset)
        data = await self._offload(lambda: file.pread(offset, length))
        if len(data) != length:
            raise StorageError(f"spool file shrank: {len(data)} of {length} octets at {offset}")
        self._offset += length
        return data


async def close_read_file(file: ReadFile, offload: Offload) -> None:
    try:
        await offload(file.close)
    except StorageError:
        file.close()
