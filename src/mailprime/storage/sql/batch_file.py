"""Many messages' content written as ONE spool file, past the page cache where the kernel allows.

Why: a campaign queues its messages in batches (one transaction each). Kept in the database, a
~15 KB message is written twice (the WAL, then the checkpoint's copy into the main file) and
every copy passes through the page cache, which grows by the whole campaign (1.5 GB for 100,000
messages) — on a virtual machine whose free memory the host takes back, each new page-cache
page first costs a host fault: ~35 us of kernel time per 16 KB page measured here, more than
the rest of the write. One file per batch is written once, fsynced before the transaction that
names it (spool.py's rule), and the rows hold (path, offset).

Theory of operation: the contents are copied, one after another, into a page-aligned buffer of
`CHUNK` octets (an anonymous mmap, made once and reused, so its memory stays resident), which
goes out with O_DIRECT each time it is full, at the file offset it covers: the octets go from the
buffer to the device without a page-cache copy. The last piece is padded with zeros to a whole
number of `BLOCK`s; the file is then cut to its true length and fsynced (the data is on the
device already; the fsync writes the size and the extents and flushes the device's cache).
Where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some network filesystems) or an
aligned write (a device block larger than `BLOCK`), the file is written again through the page
cache, and O_DIRECT is not tried again by this writer; a short write (a full disk) is retried
through the page cache too, for that file only. Readers read such a file like any other
(buffered): after a direct write returns, the kernel has dropped any cached pages of the range,
so a read sees what was written.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Sequence

# The alignment O_DIRECT asks of the buffer, the file offset and the length: the logical block
# size of the device, 512 or 4096 on the devices we meet; 4096 satisfies both.
BLOCK = 4096
# The buffer, and so the most one write system call sends: a multiple of BLOCK. 1 MB keeps the
# calls few (seven for a campaign batch of 500 ~14 KB messages) and the memory small.
CHUNK = 1024 * 1024
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)


class _Refused(Exception):
    """The kernel refused an O_DIRECT write; `for_good`: this filesystem never takes one."""

    def __init__(self, for_good: bool) -> None:
        super().__init__("O_DIRECT write refused")
        self.for_good = for_good


class BatchFileWriter:
    """Writes a new file from several contents, durably (`write`). Thread-safe: the buffer is
    shared, so writes fill it one at a time; the fsyncs run outside the lock."""

    def __init__(self, *, direct: bool = True) -> None:
        self._lock = threading.Lock()
        self._buffer: mmap.mmap | None = None
        self.direct = direct and _O_DIRECT != 0

    def write(self, path: str | os.PathLike[str], contents: Sequence[bytes]) -> None:
        """Creates `path` (which must not exist) holding `contents` one after another, and
        fsyncs it. Raises OSError; the caller removes a file left behind."""
        total = sum(map(len, contents))
        if self.direct and total:  # (an empty file has nothing to write past the cache)
            fd = self._open(path, direct=True)
            if fd is not None:
                try:
                    try:
                        self._write_direct(fd, contents)
                    except _Refused as refused:
                        if refused.for_good:
                            self.direct = False
                    else:
                        os.ftruncate(fd, total)  # drop the padding
                        os.fsync(fd)
                        return
                finally:
                    os.close(fd)
                os.unlink(path)  # refused mid-way: written again below, through the cache
        fd = self._open(path, direct=False)
        assert fd is not None
        try:
            for start in range(0, len(contents), 512):  # IOV_MAX is 1024 on Linux
                part = contents[start:start + 512]
                want = sum(map(len, part))
                done = os.writev(fd, part)
                if done < want:  # a short write: the rest one piece at a time
                    view = memoryview(b"".join(part))[done:]
                    while view:
                        view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open(self, path: str | os.PathLike[str], *, direct: bool) -> int | None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(path, flags | (_O_DIRECT if direct else 0), 0o600)
        except OSError as exc:
            if direct and exc.errno in _REFUSED:
                self.direct = False
                return None
            raise

    def _write_direct(self, fd: int, contents: Sequence[bytes]) -> None:
        """The contents through the buffer, CHUNK octets a write; the last one padded.
        Raises _Refused when the kernel will not take an aligned write."""
        with self._lock:
            if self._buffer is None:
                self._buffer = mmap.mmap(-1, CHUNK)
            buffer = self._buffer
            filled = offset = 0
            for content in contents:
                view = memoryview(content)
                while view:
                    take = min(len(view), CHUNK - filled)
                    buffer[filled:filled + take] = view[:take]
                    filled += take
                    view = view[take:]
                    if filled == CHUNK:
                        _pwrite_all(fd, buffer, CHUNK, offset)
                        offset += CHUNK
                        filled = 0
            if filled:
                padded = -(-filled // BLOCK) * BLOCK
                buffer[filled:padded] = bytes(padded - filled)
                _pwrite_all(fd, buffer, padded, offset)


def _pwrite_all(fd: int, buffer: mmap.mmap, length: int, offset: int) -> None:
    """The first `length` octets of `buffer` (a multiple of BLOCK) at `offset`, with O_DIRECT."""
    with memoryview(buffer) as view:
        done = 0
        while done < length:
            try:
                wrote = os.pwrite(fd, view[done:length], offset + done)
            except OSError as exc:
                if exc.errno in _REFUSED:
                    raise _Refused(for_good=True) from exc
                raise
            if wrote <= 0 or wrote % BLOCK:  # short and unaligned: go on through the cache
                raise _Refused(for_good=False)
            done += wrote
