"""The selected mailbox as one session sees it: message sequence numbers, UIDs, flags, and what
it has told the client so far (RFC 3501 2.3.1 and 7.4.1, RFC 9051 2.3.1 and 7.5.1, RFC 7162).

Theory of operation. Sequence numbers are positions in `_uids` (ascending UIDs). The storage
moves on by itself (other sessions, SMTP delivery, other processes); the view catches up only
when `sync` is called, which is after each command and while IDLE, and turns the difference
into untagged responses:
  new UIDs              -> `* n EXISTS` (and `* 0 RECENT` for IMAP4rev1 clients),
  changed flags         -> `* n FETCH (FLAGS (...) UID u [MODSEQ (m)])`,
  new keywords          -> `* FLAGS (...)`,
  UIDs gone from storage -> `* n EXPUNGE`, but only when the caller allows it: RFC 3501 7.4.1
                            forbids an EXPUNGE while answering FETCH, STORE or SEARCH (their
                            sequence numbers would shift under the client). Until then the UID
                            stays in the view ("vanished"), keeping every sequence number valid.
`known_modseq` is the mailbox's highestmodseq as of the last sync; every row with a greater
modseq is re-read and compared with the view's copy, so changes the session made itself (whose
rows the view already holds) produce no response. When the mailbox's `expunged_modseq` passed
`known_modseq`, the whole UID list is re-read to learn what vanished.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.domain.errors import NotFound
from mailprime.domain.mail import Mailbox, StoredMessage
from mailprime.proto.imap.types import (
    Atom,
    ParenList,
    Response,
    SequenceSet,
    Untagged,
    exists,
    expunge,
    flags_response,
    recent,
)
from mailprime.services.imap.fetch import flags_value
from mailprime.services.imap.mailbox_cache import MailboxCache
from mailprime.storage.ports import MailboxStore

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_FLAGS = Atom("FLAGS")


class MailboxGone(Exception):
    """The selected mailbox was deleted (by another session): the session must end it."""


class BadSequence(Exception):
    """A message sequence number beyond the mailbox (RFC 9051 6.4.5: BAD)."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    allow_expunge: bool  # RFC 3501 7.4.1: False while answering FETCH, STORE, SEARCH
    condstore: bool  # RFC 7162 3.2.4: unsolicited FETCH carries MODSEQ once CONDSTORE is on
    rev1: bool  # send `* 0 RECENT` (IMAP4rev1; RFC 9051 removed \Recent)


class MailboxView:
    def __init__(self, mailbox: Mailbox, read_only: bool, messages: Sequence[StoredMessage]) -> None:
        self.mailbox = mailbox  # as of the last sync
        self.read_only = read_only
        self._uids = [m.uid for m in messages]
        self._messages = {m.uid: m for m in messages}
        self._max_uid = max(self._uids, default=0)
        self._vanished: set[int] = set()
        self.keywords = _keywords(messages)

    @classmethod
    async def open(cls, store: MailboxStore, mailbox: Mailbox, read_only: bool,
                   cache: MailboxCache) -> MailboxView:
        current = await cache.read(store, mailbox.id)
        return cls(current.mailbox, read_only, current.messages)

    @property
    def known_modseq(self) -> int:
        """The mailbox's highestmodseq as of the last sync."""
        return self.mailbox.highestmodseq

    # Reading ----------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self._uids)

    @property
    def uidnext(self) -> int:
        return max(self.mailbox.uidnext, self._max_uid + 1)

    def messages(self) -> list[StoredMessage]:
        """Every message in sequence order (vanished ones included until their EXPUNGE)."""
        return [self._messages[u] for u in self._uids]

    def seq(self, uid: int) -> int:
        return bisect.bisect_left(self._uids, uid) + 1

    def uid(self, seq: int) -> int:
        return self._uids[seq - 1]

    def message(self, uid: int) -> StoredMessage:
        return self._messages[uid]

    def is_vanished(self, uid: int) -> bool:
        return uid in self._vanished

    def first_unseen(self) -> int | None:
        for index, uid in enumerate(self._uids):
            if "\\Seen" not in self._messages[uid].flags:
                return index + 1
        return None

    def flags(self) -> tuple[str, ...]:
        return (*SYSTEM_FLAGS, *sorted(self.keywords))

    def resolve(self, sequence: SequenceSet, *, uid: bool) -> list[StoredMessage]:
        """The messages a sequence set names, in sequence order. UID sets may name UIDs that do
        not exist (ignored, RFC 3501 6.4.8); a message number beyond the mailbox is an error
        (BadSequence), except through "*" (RFC 9051 6.4.5: "*" is the last message)."""
        return [message for _, message in self.resolve_numbered(sequence, uid=uid)]

    def resolve_numbered(self, sequence: SequenceSet, *, uid: bool) -> list[tuple[int, StoredMessage]]:
        """`resolve`, each message with its sequence number (FETCH answers with it)."""
        uids, messages = self._uids, self._messages
        if uid:
            largest = uids[-1] if uids else 0
            found: list[tuple[int, StoredMessage]] = []
            for low, high in sequence.intervals(largest):
                start = bisect.bisect_left(uids, low)
                stop = bisect.bisect_right(uids, high)
                found.extend((index + 1, messages[uids[index]]) for index in range(start, stop))
            return found
        if any(n is not None and n > self.count for r in sequence.ranges for n in (r.start, r.end)):
            raise BadSequence(f"Message sequence number beyond the last message ({self.count})")
        return [(n, messages[uids[n - 1]]) for n in sequence.resolve(self.count)]

    # Own changes ------------------------------------------------------------------------------

    def update(self, messages: Sequence[StoredMessage]) -> list[Response]:
        """Takes rows this session changed (STORE, \\Seen by FETCH); returns a `* FLAGS`
        response if they brought new keywords."""
        for m in messages:
            if m.uid in self._messages:
                self._messages[m.uid] = m
        return self._new_keywords(messages)

    # Catching up ------------------------------------------------------------------------------

    async def sync(self, store: MailboxStore, options: SyncOptions) -> list[Response]:
        """Reads what changed since the last sync and returns the untagged responses."""
        try:
            # One read: the mailbox row and the rows changed since (usually none).
            snapshot = await store.mailbox_snapshot(self.mailbox.id, changed_since=self.known_modseq)
            if snapshot.mailbox.highestmodseq <= self.known_modseq:
                return self._expunges() if options.allow_expunge else []
            full = snapshot.expunged_modseq > self.known_modseq
            if full:
                snapshot = await store.mailbox_snapshot(self.mailbox.id)
        except NotFound as exc:
            raise MailboxGone(str(exc)) from exc
        rows = snapshot.messages
        self.mailbox = snapshot.mailbox  # and so known_modseq
        if full:
            present = {r.uid for r in rows}
            self._vanished.update(u for u in self._uids if u not in present)
        out: list[Response] = self._expunges() if options.allow_expunge else []
        changed: list[StoredMessage] = []
        added: list[StoredMessage] = []
        for row in rows:
            if row.uid > self._max_uid:
                added.append(row)
                continue
            old = self._messages.get(row.uid)
            if old is None or row.uid in self._vanished or row.modseq == old.modseq:
                continue
            self._messages[row.uid] = row
            if row.flags != old.flags or options.condstore:
                changed.append(row)
        out += self._new_keywords([*changed, *added])
        if added:
            for row in added:
                self._uids.append(row.uid)
                self._messages[row.uid] = row
            self._max_uid = self._uids[-1]
            out.append(exists(self.count))
            if options.rev1:
                out.append(recent(0))
        out += [self.flag_fetch(m, include_uid=True, include_modseq=options.condstore)
                for m in changed]
        return out

    def flag_fetch(self, message: StoredMessage, *, include_uid: bool,
                   include_modseq: bool) -> Untagged:
        """`* n FETCH (FLAGS (...) [UID u] [MODSEQ (m)])` for a message in the view."""
        items: list[Atom | int | ParenList] = [_FLAGS, flags_value(message.flags)]
        if include_uid:
            items += [Atom("UID"), message.uid]
        if include_modseq:
            items += [Atom("MODSEQ"), ParenList((message.modseq,))]
        return Untagged((self.seq(message.uid), Atom("FETCH"), ParenList(tuple(items))))

    def _expunges(self) -> list[Response]:
        """`* n EXPUNGE` for every vanished message, ascending, each number counted after the
        previous removal (the RFC 3501 6.4.3 example's order)."""
        out: list[Response] = []
        for uid in sorted(self._vanished):
            index = bisect.bisect_left(self._uids, uid)
            if index < len(self._uids) and self._uids[index] == uid:
                del self._uids[index]
                del self._messages[uid]
                out.append(expunge(index + 1))
        self._vanished.clear()
        return out

    def _new_keywords(self, messages: Sequence[StoredMessage]) -> list[Response]:
        found = _keywords(messages) - self.keywords
        if not found:
            return []
        self.keywords |= found
        return [flags_response(self.flags())]


def _keywords(messages: Sequence[StoredMessage]) -> frozenset[str]:
    # Distinct flag sets first: the store shares one set between messages with the same flags.
    return frozenset(f for flags in {m.flags for m in messages} for f in flags if not f.startswith("\\"))
