"""Read-ahead of message content for a POP3 session: a client that sends RETR n (or TOP n) will
most likely send RETR n+1 next, so the contents of the next few messages come in the same read.

Theory of operation. The buffer maps message numbers of the session's snapshot to content: the
bytes of a message stored in the database, or the `BlobId` of one kept in a spool file (never
buffered: the session streams it with `open_blob`, whatever its size). `content(n)` answers from
the buffer when it holds n and nothing changed the mailbox from this process since the buffer was
filled (`MailboxStore.local_change_mark`, no I/O); otherwise it empties the buffer and fills it
with one `message_wire_contents` read of n and the messages after it, up to `MAX_MESSAGES` messages
and `MAX_OCTETS` octets by their snapshot sizes (n itself is always read, as a whole inline
message always was). The snapshot's UIDs ascend and a mailbox never gets a UID below its
UIDNEXT, so the UID range of those messages holds nothing else: the bound is exact. A message
is handed out once (popped), so a second RETR of it reads again.

Expunges: the read reports which UIDs are no longer in the mailbox; those numbers are `GONE` for
the rest of the session (UIDs are never reused, RFC 3501 2.3.1.1), and the session answers them
"-ERR". An expunge committed by this process after the buffer was filled moves the change mark,
so the next `content()` reads again and sees it; one committed by another worker process is seen
at the next read, at most `MAX_MESSAGES` messages later (until then the content, read while the
message existed, is sent: the same race as an expunge just after the RETR).

Wire form: `encoded(n, content)` is RETR n's response body, made by the cheapest encoding the
content's line facts allow (read with the content, kept per message number of the read). Its
`line_form` (found when the content was stored) says whether the content
needs its line ends normalised or its dots stuffed, and `dot_lines` where those dots are; with
CRLF line ends known the content goes out as it is, or in slices around the stuffed dots
(`multiline.encode_known`: no scan, no copy);
where the form is not known (content stored before the store kept it) the octets are checked
and encoded here (`multiline.encode_whole`), as they always were.

Encode-ahead: after a RETR of n the session calls `retrieved(n)`; when the connection then waits
for the client (`encode_ahead`, from the driver's idle moment) message n+1, if buffered, is
encoded for the wire while the client is still reading n, so the answer to RETR n+1 is ready
when it comes. `encoded()` hands that out only for that RETR and only with the very content the
buffer gave for it (so every rule above still holds); the next RETR drops it either way.

Memory: at most `MAX_OCTETS` of buffered content (or one inline message, if larger) per session,
plus one message encoded ahead (a copy only where the form is not known or is BARE_LF).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from mailprime.domain.ids import BlobId, MailboxId
from mailprime.proto.pop3.multiline import Piece, encode_known, encode_whole
from mailprime.storage.ports import LineForm, ListedMessage, MailboxStore, WireContent

MAX_MESSAGES = 64  # messages per read
MAX_OCTETS = 2 * 1024 * 1024  # buffered content per session, by the snapshot's sizes


class Gone(enum.Enum):
    GONE = "gone"  # expunged since the snapshot


GONE: Final = Gone.GONE


class ReadAhead:
    """The content buffer of one session's snapshot (`messages`, numbered from 1)."""

    __slots__ = ("_buffer", "_encoded", "_forms", "_gone", "_mailbox_id", "_mark", "_messages",
                 "_next", "_store")

    def __init__(self, store: MailboxStore, mailbox_id: MailboxId,
                 messages: Sequence[ListedMessage]) -> None:
        self._store = store
        self._mailbox_id = mailbox_id
        self._messages = messages
        self._buffer: dict[int, bytes | BlobId] = {}
        self._forms: dict[int, WireContent] = {}  # the line facts of the last read's messages
        self._gone: set[int] = set()
        self._mark = 0  # the store's change mark when the buffer was filled
        self._next: int | None = None  # the message to encode at the next idle moment
        self._encoded: tuple[int, bytes, list[Piece]] | None = None  # number, content, wire form

    @property
    def buffered(self) -> tuple[int, ...]:
        """The message numbers whose content is in the buffer (for logs and tests)."""
        return tuple(sorted(self._buffer))

    @property
    def encoded_ahead(self) -> int | None:
        """The number of the message encoded ahead, waiting for its RETR (for logs and tests)."""
        return None if self._encoded is None else self._encoded[0]

    def buffered_content(self, number: int) -> bytes | BlobId | Gone | None:
        """What `content(number)` would return, when it can answer without a read (no I/O,
        no coroutine: the usual case); else None."""
        if number in self._gone:
            return GONE
        if self._mark != self._store.local_change_mark(self._mailbox_id):
            self._buffer.clear()  # something changed here: maybe an expunge, so read again
            return None
        return self._buffer.pop(number, None)

    async def content(self, number: int) -> bytes | BlobId | Gone:
        """Message `number`'s content, the blob to stream it from, or GONE. Raises what the
        store raises."""
        found = self.buffered_content(number)
        if found is not None:
            return found
        self._buffer.clear()
        self._forms.clear()
        last = self._last_of_batch(number)
        messages = self._messages
        # The mark before the read: a change committed during the read moves it, and the next
        # call reads again rather than trust a buffer that may predate it.
        mark = self._store.local_change_mark(self._mailbox_id)
        contents = await self._store.message_wire_contents(
            self._mailbox_id, messages[number - 1].uid, messages[last - 1].uid)
        self._mark = mark
        for n in range(number, last + 1):
            read = contents.get(messages[n - 1].uid)
            if read is None:
                self._gone.add(n)
            else:
                self._buffer[n] = read.content
                self._forms[n] = read
        return self._buffer.pop(number, GONE)

    def retrieved(self, number: int) -> None:
        """RETR `number` was answered: the next idle moment encodes the message after it."""
        self._next = number + 1

    def encode_ahead(self) -> None:
        """Encodes the message `retrieved` named, if its content is buffered (no I/O)."""
        number, self._next = self._next, None
        if number is None or (self._encoded is not None and self._encoded[0] == number):
            return
        if self._mark != self._store.local_change_mark(self._mailbox_id):
            return  # the buffer is stale: `content` reads again
        content = self._buffer.get(number)
        if isinstance(content, bytes):
            self._encoded = (number, content, self._encode(number, content))

    def encoded(self, number: int, content: bytes) -> list[Piece]:
        """RETR `number`'s response body for this `content` (as `content()` just returned it):
        the one encoded ahead if it was made from this very content, else made now. Whatever
        was encoded ahead is dropped either way."""
        found, self._encoded = self._encoded, None
        if found is not None and found[0] == number and found[1] is content:
            return found[2]
        return self._encode(number, content)

    def _encode(self, number: int, content: bytes) -> list[Piece]:
        facts = self._forms.get(number)
        # Only the facts read with this very content describe it (a later read replaces both).
        form = facts.line_form if facts is not None and facts.content is content else None
        if form is None or form is LineForm.BARE_LF:
            return [encode_whole(content)]
        assert facts is not None
        return encode_known(content, crlf_only=True, dot_lines=form is LineForm.DOT_LINES,
                            dot_offsets=facts.dot_lines)

    def _last_of_batch(self, first: int) -> int:
        """The last message of the batch that starts at `first`."""
        messages = self._messages
        last = first
        octets = messages[first - 1].size
        for n in range(first + 1, min(first + MAX_MESSAGES, len(messages) + 1)):
            if n not in self._gone:
                octets += messages[n - 1].size
                if octets > MAX_OCTETS:
                    break
            last = n
        return last
