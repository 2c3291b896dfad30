"""Reads of mailboxes, their messages and message content; and the event log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from mailprime.domain.ids import AccountId, BlobId, MailboxId, QueueId
from mailprime.domain.mail import Event, EventKind, Mailbox, StoredMessage
from mailprime.storage.ports import LineForm, ListedMessage, WireContent
from mailprime.storage.sql.folders import mailbox_name
from mailprime.storage.sql.rows import attrs_json, to_event, to_mailbox, to_stored_message
from mailprime.storage.sql.schema import blobs, events, mailbox_messages, mailboxes
from mailprime.storage.sql.streams import dot_line_offsets


def list_mailboxes(conn: Connection, account_id: AccountId) -> list[Mailbox]:
    return [to_mailbox(row) for row in conn.execute(
        select(mailboxes).where(mailboxes.c.account_id == account_id).order_by(mailboxes.c.id))]


def get_mailbox(conn: Connection, account_id: AccountId, name: str) -> Mailbox | None:
    row = conn.execute(select(mailboxes).where(mailboxes.c.account_id == account_id,
                                               mailboxes.c.name == mailbox_name(name))).first()
    return to_mailbox(row) if row else None


def list_messages(conn: Connection, account_id: AccountId, mailbox: str) -> list[StoredMessage]:
    mm = mailbox_messages
    return [to_stored_message(row) for row in conn.execute(
        select(mm).join(mailboxes, mailboxes.c.id == mm.c.mailbox_id)
        .where(mailboxes.c.account_id == account_id, mailboxes.c.name == mailbox_name(mailbox))
        .order_by(mm.c.uid))]


# Built once: constructing and cache-keying a select costs more than running these.
# No join with blobs: see storage.ports.ListedMessage (overflow pages).
_LISTING = (
    select(mailbox_messages.c.uid, mailbox_messages.c.size, mailbox_messages.c.flags)
    .where(mailbox_messages.c.mailbox_id == bindparam("mailbox_id"))
    .order_by(mailbox_messages.c.uid))
# The stored small integer as a LineForm, without an enum call per row.
_LINE_FORMS: dict[int | None, LineForm | None] = {None: None, **{int(f): f for f in LineForm}}
_IN_RANGE = (mailbox_messages.c.mailbox_id == bindparam("mailbox_id"),
             mailbox_messages.c.uid.between(bindparam("first_uid"), bindparam("last_uid")))
_CONTENTS_IN_RANGE = (
    select(mailbox_messages.c.uid, blobs.c.id, blobs.c.data, blobs.c.path)
    .join_from(mailbox_messages, blobs, blobs.c.id == mailbox_messages.c.blob_id)
    .where(*_IN_RANGE))
# The line columns come after the content in the row: read with it, they cost nothing more.
_WIRE_CONTENTS_IN_RANGE = _CONTENTS_IN_RANGE.add_columns(blobs.c.line_form, blobs.c.dot_lines)


def message_listing(conn: Connection, mailbox_id: MailboxId) -> list[ListedMessage]:
    # Messages with the same flags share one frozenset: fewer objects for every login to build
    # and for the garbage collector to visit while the session lasts.
    flag_sets: dict[str, frozenset[str]] = {}
    listing: list[ListedMessage] = []
    for uid, size, flags in conn.execute(_LISTING, {"mailbox_id": mailbox_id}):
        flag_set = flag_sets.get(flags)
        if flag_set is None:
            flag_set = flag_sets[flags] = frozenset(flags.split()) if flags else frozenset()
        listing.append(ListedMessage(uid, size, flag_set))
    return listing


def message_contents(conn: Connection, mailbox_id: MailboxId, first_uid: int,
                     last_uid: int) -> dict[int, bytes | BlobId]:
    """uid -> inline content, or the blob id of content in a spool file (its octets unread)."""
    rows = conn.execute(_CONTENTS_IN_RANGE, {"mailbox_id": mailbox_id, "first_uid": first_uid,
                                             "last_uid": last_uid})
    return {uid: (bytes(data or b"") if path is None else BlobId(blob_id))
            for uid, blob_id, data, path in rows}


def message_wire_contents(conn: Connection, mailbox_id: MailboxId, first_uid: int,
                          last_uid: int) -> dict[int, WireContent]:
    """`message_contents` with the line form of each (storage.ports.WireContent)."""
    rows = conn.execute(_WIRE_CONTENTS_IN_RANGE, {"mailbox_id": mailbox_id,
                                                  "first_uid": first_uid, "last_uid": last_uid})
    return {uid: WireContent(bytes(data or b"") if path is None else BlobId(blob_id),
                             _LINE_FORMS.get(form), dot_line_offsets(dots))
            for uid, blob_id, data, path, form, dots in rows}


def event_row(at: datetime, kind: EventKind, queue_id: QueueId | None, recipient: str | None, *,
              detail: str, attrs: Sequence[tuple[str, str]]) -> dict[str, object]:
    return {"at": at, "kind": kind.value, "queue_id": queue_id, "recipient": recipient,
            "detail": detail, "attrs": attrs_json(attrs)}


def append_event(conn: Connection, row: dict[str, object]) -> None:
    conn.execute(insert(events), row)


def list_events(conn: Connection, queue_id: QueueId | None, limit: int) -> list[Event]:
    """Oldest first (the order things happened), at most `limit`."""
    stmt = select(events).order_by(events.c.id).limit(limit)
    if queue_id is not None:
        stmt = stmt.where(events.c.queue_id == queue_id)
    return [to_event(row) for row in conn.execute(stmt)]
