"""The POP3 maildrop service: the Pop3Handler behind the POP3 listeners (satisfies
net.pop3_handler without importing net).

Theory of operation. One `Pop3Session` per connection. A login (USER/PASS or SASL, checked by
`mail_auth`) snapshots the account's INBOX: its messages' UIDs, sizes and flags in UID order
(`message_listing`), numbered 1..n for the whole session (RFC 1939 5). The protocol core keeps
the deletion marks; only RETR/TOP and the UPDATE come here:

* RETR/TOP take the content from the session's `ReadAhead` (pop3_readahead.py): a message kept
  in the database comes with the next few in one read, so a client retrieving its messages in
  order costs one storage read per batch, not one per message; a message in a spool file is
  streamed in pieces (`open_blob`), so memory stays bounded whatever the size. The snapshot is
  the truth for the session (RFC 1939 5) and each RETR makes no check of its own: IMAP may
  expunge a message meanwhile, which the read-ahead learns from its next read (at once for an
  expunge by this process, which moves the store's change mark; see pop3_readahead.py), and such
  a message gets "-ERR Message was removed". (Content read while it existed is sent:
  BlobReader, too, stays readable once opened.) After RETR n, the driver's idle moment
  (`on_idle`, while the client reads the answer) encodes message n+1 ahead.
* QUIT (UPDATE) expunges exactly the UIDs marked with DELE, through
  `MailboxStore.expunge(inbox, uids, only_deleted=False)`, in one durable transaction, and then
  sets \\Seen on the messages retrieved in full and kept that the snapshot saw unseen, as
  Dovecot does, so that an IMAP client of the same account sees them as read (a message the
  snapshot saw \\Seen is left alone: no write at all when nothing new was read). A connection
  that ends without QUIT changes nothing.

Why no [IN-USE] lock (RFC 2449 8.1.1 allows refusing a second session): each session acts only
on the UIDs of its own snapshot, expunges by UID, and the store ignores UIDs already gone, so two
POP3 sessions, or POP3 and IMAP, cannot corrupt each other; at worst a message is deleted by one
and reported removed to the other. A lock would also have to be held in the database to work
across worker processes, and would lock out a client whose previous connection died until the
lock expired. Dovecot makes the same choice by default (pop3_lock_session = no).

Unique ids: "<uidvalidity>.<uid>". The UID alone is unique for the life of the mailbox (and the
same number IMAP shows); with UIDVALIDITY in front it also stays unique if the mailbox is ever
re-created (an account removed and added again restarts UIDs at 1), so a client that "leaves
mail on the server" never mistakes a new message for one it already has (RFC 1939 7: a unique
id is never reused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailprime.domain.errors import DomainError, NotFound
from mailprime.domain.ids import MailboxId, new_queue_id
from mailprime.domain.mail import Account, FlagMode
from mailprime.logline import emit
from mailprime.proto.pop3.types import ContentSink, LoginAccepted, MessageInfo, Reply
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.mail_auth import LoginCache, check_login
from mailprime.services.pop3_readahead import GONE, ReadAhead
from mailprime.storage.ports import DirectoryStore, ListedMessage, MailboxStore, MailStore

log = logging.getLogger("mailprime.pop3d")

_SEEN = frozenset({"\\Seen"})
_REMOVED = Reply.negative("Message was removed by another session")
# Pieces handed to the sink from a buffered message: as a streamed one would come (READ_CHUNK).
_PIECE = 128 * 1024


class MaildropStore(MailStore, MailboxStore, Protocol):
    """What a POP3 session reads and writes: INBOX, its messages and their content."""


@dataclass(frozen=True, slots=True)
class Pop3Config:
    hostname: str


class Pop3Service:
    """Satisfies net.pop3_handler.Pop3Handler for one listener."""

    def __init__(self, store: MaildropStore, directory: DirectoryStore, config: Pop3Config, *,
                 logins: LoginCache | None = None) -> None:
        self.store = store
        self.directory = directory  # runtime passes a CachedDirectory
        self.config = config
        self.logins = logins if logins is not None else LoginCache()  # may be shared with IMAP

    def new_session(self, peer: PeerInfo, tls: bool) -> Pop3Session:
        return Pop3Session(self, peer, tls)


@dataclass(slots=True)
class _Maildrop:
    """The INBOX snapshot taken at login."""

    mailbox_id: MailboxId
    uidvalidity: int
    messages: tuple[ListedMessage, ...]
    readahead: ReadAhead


@dataclass(slots=True)
class _Counts:
    retrieved: int = 0  # RETR
    tops: int = 0  # TOP
    octets: int = 0  # stored octets of the messages retrieved with RETR
    deleted: int = 0  # removed at QUIT
    retrieved_uids: set[int] = field(default_factory=set)


class Pop3Session:
    """Satisfies net.pop3_handler.Pop3Session; see the module docstring."""

    def __init__(self, service: Pop3Service, peer: PeerInfo, tls: bool) -> None:
        self.service = service
        self.peer = peer
        self.tls = tls
        self.account: Account | None = None
        self.maildrop: _Maildrop | None = None
        self.counts = _Counts()
        self.quit = False
        self.started = time.monotonic()
        self.session_id = new_queue_id()

    async def on_connect(self) -> Reply | None:
        return None

    async def on_tls(self) -> None:
        self.tls = True

    async def on_login(self, mechanism: str, authzid: str, authcid: str,
                       password: str) -> LoginAccepted | Reply:
        check = await check_login(self.service.directory, authzid, authcid, password,
                                  cache=self.service.logins)
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             sasl_method=mechanism, sasl_username=authcid, result="ok" if check.ok else "failed",
             reason=check.failure.value if check.failure else None)
        if check.account is None:
            return Reply.negative("Authentication failed", "AUTH")  # RFC 3206 5
        store = self.service.store
        inbox = await store.get_mailbox(check.account.id, "INBOX")
        if inbox is None:
            return Reply.negative("This account has no INBOX", "SYS/PERM")
        messages = tuple(await store.message_listing(inbox.id))
        self.account = check.account
        self.maildrop = _Maildrop(inbox.id, inbox.uidvalidity, messages,
                                  ReadAhead(store, inbox.id, messages))
        return LoginAccepted(tuple(MessageInfo(m.size, f"{inbox.uidvalidity}.{m.uid}")
                                   for m in messages))

    async def on_retrieve(self, number: int, lines: int | None, sink: ContentSink) -> Reply | None:
        maildrop = self._maildrop()
        message = maildrop.messages[number - 1]
        readahead = maildrop.readahead
        content = readahead.buffered_content(number)
        if content is None:
            content = await readahead.content(number)
        if content is GONE:
            return _REMOVED
        if isinstance(content, bytes):
            if lines is None:  # the whole of it, in memory already: sent in one go
                await sink.write_encoded(readahead.encoded(number, content))
            else:  # TOP: the encoder finds where to cut
                await _write_pieces(content, sink)
        else:  # in a spool file: streamed, so memory stays bounded whatever the size
            try:
                async with self.service.store.open_blob(content) as blob:
                    async for chunk in blob.chunks():
                        if not await sink.write(chunk):
                            break
            except NotFound:  # its last copy was expunged since the read-ahead saw it
                return _REMOVED
        if lines is None:
            readahead.retrieved(number)  # the next idle moment encodes the message after it
            self.counts.retrieved += 1
            self.counts.octets += message.size
            self.counts.retrieved_uids.add(message.uid)
        else:
            self.counts.tops += 1
        return None

    def on_idle(self) -> None:
        if self.maildrop is not None:
            self.maildrop.readahead.encode_ahead()  # RETR n+1, while the client reads RETR n

    async def on_update(self, deleted: Sequence[int]) -> Reply:
        maildrop = self._maildrop()
        store = self.service.store
        self.quit = True
        uids = [maildrop.messages[n - 1].uid for n in deleted]
        try:
            removed = await store.expunge(maildrop.mailbox_id, uids, only_deleted=False) if uids else []
        except DomainError as exc:
            emit(log, self.session_id, logging.ERROR, status="update failed", reason=exc.message)
            return Reply.negative("Some deleted messages not removed", "SYS/TEMP")  # RFC 1939 6
        self.counts.deleted = len(removed)
        # Only what the snapshot saw unseen: most retrieved messages were \Seen already (a
        # client that leaves mail on the server), and a flag write is a durable transaction.
        unseen = {m.uid for m in maildrop.messages if "\\Seen" not in m.flags}
        kept_seen = sorted(self.counts.retrieved_uids.intersection(unseen).difference(uids))
        if kept_seen:
            try:
                await store.store_flags(maildrop.mailbox_id, kept_seen, FlagMode.ADD, _SEEN)
            except DomainError as exc:  # the deletions are done; \Seen is a courtesy
                emit(log, self.session_id, logging.WARNING, status="seen flags failed",
                     reason=exc.message)
        left = len(maildrop.messages) - len(deleted)
        state = f"{left} messages left" if left else "maildrop empty"
        return Reply.positive(f"{self.service.config.hostname} POP3 server signing off ({state})")

    async def on_close(self) -> None:
        counts = self.counts
        emit(log, self.session_id, listener=self.peer.listener, client=self._client(),
             tls="yes" if self.tls else "no", user=self.account.address if self.account else None,
             retr=counts.retrieved, top=counts.tops, octets=counts.octets, deleted=counts.deleted,
             quit="yes" if self.quit else "no", duration_s=round(time.monotonic() - self.started, 3),
             status="disconnect")

    # Helpers ------------------------------------------------------------------------------
    def _maildrop(self) -> _Maildrop:
        if self.maildrop is None:
            raise RuntimeError("no maildrop before login")  # the protocol core prevents this
        return self.maildrop

    def _client(self) -> str:
        return f"[{self.peer.ip}]:{self.peer.port}"


async def _write_pieces(content: bytes, sink: ContentSink) -> None:
    """A buffered message into the sink; usually one piece (the bench's are 4-21 KB)."""
    if len(content) <= _PIECE:
        if content:
            await sink.write(content)
        return
    view = memoryview(content)
    for start in range(0, len(content), _PIECE):
        if not await sink.write(bytes(view[start:start + _PIECE])):
            return
