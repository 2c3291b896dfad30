"""Wake-ups for sessions waiting on a mailbox (IMAP IDLE, and the polls between commands).

Theory of operation: a waiter registers a future under the mailbox id *before* it reads the
mailbox's current highestmodseq, so a change that commits between the read and the wait still
resolves its future. The store calls `changed(mailbox_id, modseq)` on the event loop after each
commit that touched the mailbox; that resolves every future registered for it. Changes committed
by another process (SO_REUSEPORT workers, other nodes) cannot call us: waiters see them when
their timeout runs out and they read the row again, so the caller's timeout is the bound on how
late such a change is noticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mailprime.domain.ids import MailboxId


class MailboxChanges:
    def __init__(self) -> None:
        self._waiters: dict[MailboxId, set[asyncio.Future[int]]] = {}
        # The highest modseq committed here per mailbox (`SqlStore.local_change_mark`): one int
        # per mailbox this process changed, so bounded by the number of mailboxes.
        self._marks: dict[MailboxId, int] = {}

    def mark(self, mailbox_id: MailboxId) -> int:
        return self._marks.get(mailbox_id, 0)

    def changed(self, mailbox_id: MailboxId, modseq: int) -> None:
        if modseq > self._marks.get(mailbox_id, 0):
            self._marks[mailbox_id] = modseq
        for future in self._waiters.pop(mailbox_id, set()):
            if not future.done():
                future.set_result(modseq)

    async def wait(self, mailbox_id: MailboxId, known_modseq: int, timeout: float,
                   read_current: Callable[[], Awaitable[int]]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(mailbox_id, set())
        waiters.add(future)
        try:
            current = await read_current()
            if current > known_modseq:
                return current
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                return await read_current()
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(mailbox_id) is waiters:
                del self._waiters[mailbox_id]
            if not future.done():
                future.cancel()
