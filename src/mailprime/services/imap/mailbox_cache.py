"""The message lists of recently selected mailboxes, shared by the IMAP sessions of one process,
so that a SELECT reads only what changed since the last one instead of every row.

Theory of operation. Storage stamps every change of a mailbox with its next modseq (RFC 7162):
a message appended, copied in or whose flags change gets the new modseq, and an expunge records
its modseq as the mailbox's `expunged_modseq`. So the messages as of modseq M, plus the rows
whose modseq is above M, are the messages now, provided nothing was expunged after M. `read`
keeps, per mailbox, the messages (UID order) of the last read and the modseq they are as of,
and asks storage for the mailbox row and the rows changed since (one read, usually a handful of
rows: those the previous session's STORE touched); when an expunge happened since, or the
mailbox is not in the cache, it reads every row. The merged list replaces the entry.

Entries are immutable once made (tuples of frozen `StoredMessage`s): a session copies what it
needs, so sessions of one mailbox never see each other's state. Bounded by the total number of
messages held (our choice: `DEFAULT_MAX_MESSAGES`, a few tens of MB at most); mailboxes leave
least recently read first. Mailbox ids are never reused by the store, so an entry can never be
mistaken for another mailbox's.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.domain.errors import NotFound
from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import Mailbox, StoredMessage
from mailprime.storage.ports import MailboxStore

# About 200 octets per message held: 50,000 messages is ~10 MB.
DEFAULT_MAX_MESSAGES = 50_000


@dataclass(frozen=True, slots=True)
class MailboxMessages:
    """A mailbox's row and its messages in UID order, as of `mailbox.highestmodseq`."""

    mailbox: Mailbox
    uids: tuple[int, ...]
    messages: tuple[StoredMessage, ...]


class MailboxCache:
    def __init__(self, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entries: OrderedDict[MailboxId, MailboxMessages] = OrderedDict()
        self._held = 0
        self.full_reads = 0  # reads of every row (tests check that a re-SELECT reads only changes)
        self.delta_reads = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def read(self, store: MailboxStore, mailbox_id: MailboxId) -> MailboxMessages:
        """The mailbox and its messages now. Raises NotFound when the mailbox is gone."""
        try:
            return await self._read(store, mailbox_id)
        except NotFound:
            self._forget(mailbox_id)
            raise

    async def _read(self, store: MailboxStore, mailbox_id: MailboxId) -> MailboxMessages:
        known = self._entries.get(mailbox_id)
        if known is not None:
            snapshot = await store.mailbox_snapshot(mailbox_id,
                                                    changed_since=known.mailbox.highestmodseq)
            if snapshot.expunged_modseq <= known.mailbox.highestmodseq:
                self.delta_reads += 1
                current = _merged(known, snapshot.mailbox, snapshot.messages)
                self._remember(mailbox_id, current)
                return current
        snapshot = await store.mailbox_snapshot(mailbox_id)
        self.full_reads += 1
        messages = tuple(snapshot.messages)
        current = MailboxMessages(snapshot.mailbox, tuple(m.uid for m in messages), messages)
        self._remember(mailbox_id, current)
        return current

    def _forget(self, mailbox_id: MailboxId) -> MailboxMessages | None:
        old = self._entries.pop(mailbox_id, None)
        if old is not None:
            self._held -= len(old.messages)
        return old

    def _remember(self, mailbox_id: MailboxId, current: MailboxMessages) -> None:
        old = self._forget(mailbox_id)
        if old is not None and old.mailbox.highestmodseq > current.mailbox.highestmodseq:
            current = old  # a concurrent read saw more: keep that one
        if len(current.messages) > self.max_messages:
            return
        self._entries[mailbox_id] = current
        self._held += len(current.messages)
        while self._held > self.max_messages:
            _, evicted = self._entries.popitem(last=False)
            self._held -= len(evicted.messages)


def _merged(known: MailboxMessages, mailbox: Mailbox,
            changed: Sequence[StoredMessage]) -> MailboxMessages:
    """`known` with the rows changed since it: each replaces the row of its UID, or is added
    in UID order (appended: new UIDs are the largest)."""
    if not changed:
        return MailboxMessages(mailbox, known.uids, known.messages)
    uids = list(known.uids)
    messages = list(known.messages)
    for row in changed:
        index = bisect.bisect_left(uids, row.uid)
        if index < len(uids) and uids[index] == row.uid:
            messages[index] = row
        else:
            uids.insert(index, row.uid)
            messages.insert(index, row)
    return MailboxMessages(mailbox, tuple(uids), tuple(messages))
