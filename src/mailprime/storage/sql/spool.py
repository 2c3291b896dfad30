"""Message content too large to keep in the database: one file per blob under the spool directory.

A file is written and fsynced (file, then directory) BEFORE the row that references it commits,
so a committed row never points at a file that a crash could lose. The reverse — a file whose row
never committed — is garbage; `sweep` removes such files once they are old enough that no writer
(in this or another process) can still be about to commit them.

A batch of messages queued together (a campaign's) can share one file (`write_batch`, written by
storage/sql/batch_file.py): their rows name the same path, each with its offset, and the file
goes when the last row naming it does (storage/sql/directory.release_blobs) or by the sweep.

Bodies received over the network arrive in pieces: they go to a temporary file `tmp/<token>.part`
(`TempFile`), which holds an exclusive flock while it is being written, is fsynced when the body
is complete, and is renamed into its shard (`adopt`) just before the acceptance's rows commit.
The sweep never deletes a temporary file that some process still holds locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from mailprime.domain.errors import StorageError
from mailprime.storage.sql.batch_file import BatchFileWriter

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SUFFIX = ".eml"
TEMP_DIR = "tmp"
_TEMP_SUFFIX = ".part"
# What `TempFile.ticket` looks like: anything else given to `adopt` is refused, so a ticket can
# never name a file outside the spool's temporary directory.
_TICKET = re.compile(rf"{TEMP_DIR}/[0-9a-f]{{32}}\{_TEMP_SUFFIX}")
# The most one batch file holds: a batch larger than this is cut into several files. A single
# larger content gets a file of its own.
BATCH_FILE_MAX = 16 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class TempFile:
    """A body being received. Blocking; every method runs on a spool I/O thread. A lock
    serialises them, so a `remove` issued while a `write` is still running on another thread
    waits for it instead of closing the descriptor under it."""

    def __init__(self, path: Path, ticket: str, fd: int) -> None:
        self.path = path
        self.ticket = ticket
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            if self._fd is None:
                raise StorageError("spool write after the file was closed")
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                raise StorageError(f"spool write failed: {exc}") from exc

    def seal(self, data: bytes | bytearray | memoryview = b"") -> None:
        """Writes the rest, fsyncs and closes (which drops the lock: the file is complete)."""
        with self._lock:
            fd = self._fd
            if fd is None:
                raise StorageError("spool file already closed")
            self._fd = None
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as exc:
                raise StorageError(f"spool write failed: {exc}") from exc
            finally:
                os.close(fd)

    def remove(self) -> None:
        """Closes and deletes the file. A no-op once `adopt` renamed it away."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


class ReadFile:
    """An open spool file for streaming reads (positional, so each reader pass is independent).
    Holding the descriptor keeps the content readable even if the file is unlinked meanwhile.

    A content that shares its file with others (`Spool.write_batch`) is the window of `size`
    octets from `base`: offsets are relative to the window, and reads stop at its end."""

    def __init__(self, fd: int, base: int = 0, size: int | None = None) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._base = base
        self.size = os.fstat(fd).st_size - base if size is None else size

    def pread(self, offset: int, length: int) -> bytes:
        """`length` octets from `offset`, fewer only at the end of the content."""
        length = max(0, min(length, self.size - offset))
        offset += self._base
        with self._lock:
            if self._fd is None:
                raise StorageError("spool file already closed")
            try:
                data = os.pread(self._fd, length, offset)
                while 0 < len(data) < length:  # a short read is legal; loop until EOF or done
                    more = os.pread(self._fd, length - len(data), offset + len(data))
                    if not more:
                        break
                    data += more
                return data
            except OSError as exc:
                raise StorageError(f"spool read failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Spool:
    """Files named `<shard>/<hint>.<random>.eml`; 256 shards keep directories small."""

    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = root.resolve()
        self.temp_root = self.root / TEMP_DIR
        self._batch_writer = BatchFileWriter(direct=direct_io)

    def ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)

    def _new_name(self, hint: str) -> tuple[str, Path]:
        """A fresh relative name in a (created if need be) shard, and the shard's path."""
        token = secrets.token_hex(8)
        shard = self.root / token[:2]
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            _fsync_dir(self.root)  # the new directory entry must survive a crash too
        safe_hint = _UNSAFE.sub("", hint)[:64] or "msg"
        return f"{token[:2]}/{safe_hint}.{token}{_SUFFIX}", shard

    def write(self, hint: str, content: bytes) -> str:
        """Writes `content` durably and returns its path relative to the root."""
        rel, shard = self._new_name(hint)
        path = self.root / rel
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(shard)
        except OSError as exc:
            self.remove(rel)
            raise StorageError(f"spool write failed: {exc}") from exc
        return rel

    def write_batch(self, hint: str, contents: Sequence[bytes]) -> list[tuple[str, int]]:
        """Writes `contents` durably into as few new files as `BATCH_FILE_MAX` allows, one
        after another; returns each content's (path relative to the root, offset in the file).
        On failure no file is left behind."""
        groups: list[list[bytes]] = []
        size = 0
        for content in contents:
            if not groups or (groups[-1] and size + len(content) > BATCH_FILE_MAX):
                groups.append([])
                size = 0
            groups[-1].append(content)
            size += len(content)
        written: list[str] = []
        where: list[tuple[str, int]] = []
        try:
            shards: set[Path] = set()
            for group in groups:
                rel, shard = self._new_name(hint)
                written.append(rel)
                self._batch_writer.write(self.root / rel, group)
                shards.add(shard)
                offset = 0
                for content in group:
                    where.append((rel, offset))
                    offset += len(content)
            for shard in shards:
                _fsync_dir(shard)
        except OSError as exc:
            self.remove_all(written)
            raise StorageError(f"spool write failed: {exc}") from exc
        return where

    # ---- temporary files of bodies being received ------------------------------------------

    def create_temp(self) -> TempFile:
        ticket = f"{TEMP_DIR}/{secrets.token_hex(16)}{_TEMP_SUFFIX}"
        path = self.root / ticket
        try:
            self.temp_root.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create spool file: {exc}") from exc
        try:
            # Blocking, not LOCK_NB: a sweep may hold it for the instant it takes to look at it.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise StorageError(f"cannot lock spool file: {exc}") from exc
        return TempFile(path, ticket, fd)

    def _temp_path(self, ticket: str) -> Path:
        if _TICKET.fullmatch(ticket) is None:
            raise StorageError(f"not a spool ticket: {ticket!r}")
        return self.root / ticket

    def adopt(self, ticket: str, hint: str, body_size: int) -> str:
        """Moves a sealed temporary file into its shard, durably (the shard directory is fsynced
        after the rename); returns its path relative to the root. Deletes the temporary file
        when it cannot be adopted."""
        temp = self._temp_path(ticket)
        try:
            size = temp.stat().st_size
            if size != body_size:
                raise StorageError(f"spool file {ticket} holds {size} octets, expected {body_size}")
            rel, shard = self._new_name(hint)
            os.rename(temp, self.root / rel)
            _fsync_dir(shard)
        except OSError as exc:
            self.remove_temp(ticket)
            raise StorageError(f"cannot adopt spool file {ticket}: {exc}") from exc
        except StorageError:
            self.remove_temp(ticket)
            raise
        return rel

    def remove_temp(self, ticket: str) -> None:
        with contextlib.suppress(OSError, StorageError):
            self._temp_path(ticket).unlink(missing_ok=True)

    # ---- reading and removing ----------------------------------------------------------------

    def _resolve(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if path.parent.parent != self.root:
            raise StorageError(f"spool path outside the spool directory: {rel!r}")
        return path

    def read(self, rel: str, offset: int | None = None, size: int | None = None) -> bytes:
        """The whole file, or (a batch file's content) `size` octets from `offset`."""
        if offset is None:
            try:
                return self._resolve(rel).read_bytes()
            except OSError as exc:
                raise StorageError(f"spool read failed: {exc}") from exc
        file = self.open_read(rel, offset, size)
        try:
            data = file.pread(0, file.size)
        finally:
            file.close()
        if len(data) != file.size:
            raise StorageError(f"spool file {rel} ends before its content ({len(data)} of "
                               f"{file.size} octets from {offset})")
        return data

    def open_read(self, rel: str, offset: int | None = None,
                  size: int | None = None) -> ReadFile:
        try:
            fd = os.open(self._resolve(rel), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"spool read failed: {exc}") from exc
        try:
            return ReadFile(fd, offset or 0, size if offset is not None else None)
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"spool read failed: {exc}") from exc

    def remove(self, rel: str) -> None:
        # A file left behind on error is garbage the next sweep removes.
        with contextlib.suppress(OSError, StorageError):
            self._resolve(rel).unlink(missing_ok=True)

    def remove_all(self, rels: Collection[str]) -> None:
        for rel in rels:
            self.remove(rel)

    def sweep(self, referenced: Collection[str], older_than: float) -> int:
        """Deletes spool files not in `referenced` and not modified in the last `older_than`
        seconds, and temporary files as old that no process holds locked; returns how many
        were deleted."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = self._sweep_temp(cutoff)
        for shard in self.root.iterdir():
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in shard.iterdir():
                rel = f"{shard.name}/{entry.name}"
                if not entry.name.endswith(_SUFFIX) or rel in referenced:
                    continue
                try:
                    if entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def _sweep_temp(self, cutoff: float) -> int:
        if not self.temp_root.is_dir():
            return 0
        removed = 0
        for entry in self.temp_root.iterdir():
            if not entry.name.endswith(_TEMP_SUFFIX):
                continue
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a session (of this or another process) is still writing it
                # Unlocked and young: sealed a moment ago and about to be adopted.
                if os.fstat(fd).st_mtime < cutoff:
                    entry.unlink(missing_ok=True)
                    removed += 1
            except OSError:
                continue
            finally:
                os.close(fd)
        return removed
