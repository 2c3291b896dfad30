"""Many messages' content written as ONE spool file, past the page cache where the kernel allows.

Why: a campaign queues its messages in batches (one transaction each). Kept in the database, a
~15 KB message is written twice (the WAL, then the checkpoint's copy into the main file) and
every copy passes through the page cache, which grows by the whole campaign (1.5 GB for 100,000
messages) — on a virtual machine whose free memory the host takes back, each new page-cache
page first costs a host fault: ~35 us of kernel time per 16 KB page measured here, more than
the rest of the write. One file per batch is written once, fsynced before the transaction that
names it (spool.py's rule), and the rows hold (path, offset).

Theory of operation: the contents are copied into one page-aligned buffer (an anonymous mmap,
kept and reused, so its memory stays resident), padded with zeros to a whole number of
`BLOCK`s, and written with O_DIRECT in one pwrite: the octets go from the buffer to the device
without a page-cache copy. The file is then cut to its true length and fsynced (the data is on
the device already; the fsync writes the size and the extents, and flushes the device's cache).
Where the filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some network filesystems) or an
aligned write (a device block larger than `BLOCK`), the same file is written through the page
cache instead, and O_DIRECT is not tried again by this writer. Readers read such a file like any
other (buffered): after a direct write returns, the kernel has dropped any cached pages of the
range, so a read sees what was written.
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
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)


def _padded(length: int) -> int:
    return -(-length // BLOCK) * BLOCK


class BatchFileWriter:
    """Writes a new file from several contents, durably (`write`). Thread-safe: the buffer is
    shared, so writes copy into it one at a time; the fsyncs run outside the lock."""

    def __init__(self, *, direct: bool = True) -> None:
        self._lock = threading.Lock()
        self._buffer: mmap.mmap | None = None
        self.direct = direct and _O_DIRECT != 0

    def _buffer_for(self, length: int) -> mmap.mmap:
        old = self._buffer
        if old is None or len(old) < length:
            size = max(_padded(length), 2 * len(old) if old is not None else 0)
            if old is not None:
                old.close()
            self._buffer = old = mmap.mmap(-1, size)
        return old

    def write(self, path: str | os.PathLike[str], contents: Sequence[bytes]) -> None:
        """Creates `path` (which must not exist) holding `contents` one after another, and
        fsyncs it. Raises OSError; the caller removes a file left behind."""
        total = sum(map(len, contents))
        if self.direct and total:  # (an empty file has nothing to write past the cache)
            fd = self._open(path, direct=True)
            if fd is not None:
                try:
                    if self._write_direct(fd, contents, total):
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

    def _write_direct(self, fd: int, contents: Sequence[bytes], total: int) -> bool:
        """True when the padded contents went out with O_DIRECT; False when the kernel refused
        the aligned write (O_DIRECT is then off for good)."""
        padded = _padded(total)
        with self._lock:
            buffer = self._buffer_for(padded)
            position = 0
            for content in contents:
                end = position + len(content)
                buffer[position:end] = content
                position = end
            buffer[total:padded] = bytes(padded - total)
            view = memoryview(buffer)
            try:
                written = 0
                while written < padded:
                    done = os.pwrite(fd, view[written:padded], written)
                    if done <= 0 or done % BLOCK:
                        return self._refuse()
                    written += done
            except OSError as exc:
                if exc.errno in _REFUSED:
                    return self._refuse()
                raise
            finally:
                view.release()
        return True

    def _refuse(self) -> bool:
        self.direct = False
        return False
