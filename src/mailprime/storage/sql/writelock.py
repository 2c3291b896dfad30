"""A cross-process lock that makes SQLite writers on one file take turns.

SQLite's own lock is not fair: a process waiting for it polls with growing sleeps (up to 100 ms)
while the holder, under load, commits and immediately begins its next batch, so a worker process
can be starved for hundreds of milliseconds. Waiters on an flock(2) sleep in the kernel and are
woken the moment it is released, so under contention the SO_REUSEPORT workers alternate — and
each one's next batch grows while the other commits, which is what group commit wants.
The kernel releases the lock if its holder dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class ProcessWriteLock:
    """Held around every write transaction of this process's writer (one thread)."""

    def __init__(self, database_path: Path) -> None:
        self.path = database_path.with_name(database_path.name + "-writelock")
        self._fd = -1
        self._guard = threading.Lock()  # flock locks belong to the open file, not the thread

    def __enter__(self) -> None:
        self._guard.acquire()
        try:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._guard.release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._guard.release()

    def close(self) -> None:
        with self._guard:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
