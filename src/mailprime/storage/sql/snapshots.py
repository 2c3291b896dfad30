"""Reads of a mailbox's messages (`SqlStore.messages`) and of its row and messages in one
transaction (IMAP's `SqlStore.mailbox_snapshot`), made without SQLAlchemy's per-row cost.

A SELECT of a mailbox of thousands of messages reads every row; building each `StoredMessage`
through SQLAlchemy's result processing (its SQLite datetime parser, then our UTC type) and a
new frozenset of flags per row cost several times the query itself. Here the statements are
built once, the internal date is read as stored and parsed by the shortest path, and messages
with the same flags share one frozenset. The values are what `rows.to_stored_message` would build.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import String, bindparam, select, type_coerce
from sqlalchemy.engine import Connection

from mailprime.domain.errors import NotFound
from mailprime.domain.ids import BlobId, MailboxId
from mailprime.domain.mail import StoredMessage
from mailprime.storage.ports import MailboxSnapshot
from mailprime.storage.sql.rows import to_mailbox
from mailprime.storage.sql.schema import mailbox_messages as mm
from mailprime.storage.sql.schema import mailboxes

# The length of SQLAlchemy's SQLite DATETIME text, "YYYY-MM-DD HH:MM:SS.ffffff": always UTC
# here (schema.UtcDateTime converts before writing).
_SQLITE_STAMP = len("2000-01-01 00:00:00.000000")

_MAILBOX = select(mailboxes).where(mailboxes.c.id == bindparam("mailbox_id"))
# The internal date as the driver returns it (text on SQLite, datetime on PostgreSQL): no
# result processor runs on it.
_ROWS = (select(mm.c.uid, mm.c.blob_id, mm.c.size, type_coerce(mm.c.internal_date, String),
                mm.c.flags, mm.c.modseq)
         .where(mm.c.mailbox_id == bindparam("mailbox_id")).order_by(mm.c.uid))
_CHANGED_ROWS = _ROWS.where(mm.c.modseq > bindparam("changed_since"))


def mailbox_snapshot(conn: Connection, mailbox_id: MailboxId, changed_since: int) -> MailboxSnapshot:
    row = conn.execute(_MAILBOX, {"mailbox_id": mailbox_id}).first()
    if row is None:
        raise NotFound("no such mailbox")
    return MailboxSnapshot(to_mailbox(row), int(row.expunged_modseq),
                           read_messages(conn, mailbox_id, changed_since))


def read_messages(conn: Connection, mailbox_id: MailboxId, changed_since: int) -> list[StoredMessage]:
    """The mailbox's messages in UID order (only those changed after `changed_since` if given);
    `MailboxStore.messages` and the snapshot both read them here."""
    if changed_since:
        result = conn.execute(_CHANGED_ROWS, {"mailbox_id": mailbox_id, "changed_since": changed_since})
    else:
        result = conn.execute(_ROWS, {"mailbox_id": mailbox_id})
    flag_sets: dict[str, frozenset[str]] = {}
    messages: list[StoredMessage] = []
    for uid, blob_id, size, stamp, flags, modseq in result:
        text = flags or ""
        flag_set = flag_sets.get(text)
        if flag_set is None:
            flag_set = flag_sets[text] = frozenset(text.split())
        messages.append(StoredMessage(mailbox_id, int(uid), BlobId(blob_id), int(size), _utc(stamp),
                                      flag_set, int(modseq)))
    return messages


def _utc(stamp: str | datetime) -> datetime:
    """An internal date as stored, as `schema.UtcDateTime` reads it: aware, in UTC."""
    if isinstance(stamp, datetime):  # PostgreSQL's TIMESTAMPTZ
        return stamp.astimezone(UTC) if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
    if len(stamp) == _SQLITE_STAMP:
        return datetime.fromisoformat(stamp + "+00:00")  # a fifth of the cost of .replace()
    parsed = datetime.fromisoformat(stamp)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
