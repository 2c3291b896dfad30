"""Database rows to domain values (one place, so every read path builds them the same way)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Row

from mailprime.domain.ids import AccountId, BlobId, EventId, MailboxId, QueueId, RecipientId
from mailprime.domain.mail import (
    Account,
    DsnNotify,
    DsnRet,
    Event,
    EventKind,
    Mailbox,
    Priority,
    QueuedMessage,
    QueueRecipient,
    RecipientStatus,
    StoredMessage,
)


def to_account(r: Row[Any]) -> Account:
    return Account(id=AccountId(r.id), address=r.address, password_hash=r.password_hash,
                   created_at=r.created_at, disabled=bool(r.disabled))


def to_mailbox(r: Row[Any]) -> Mailbox:
    return Mailbox(id=MailboxId(r.id), account_id=AccountId(r.account_id), name=r.name,
                   uidvalidity=int(r.uidvalidity), uidnext=int(r.uidnext), special_use=r.special_use,
                   subscribed=bool(r.subscribed), highestmodseq=int(r.highestmodseq))


def to_stored_message(r: Row[Any]) -> StoredMessage:
    return StoredMessage(mailbox_id=MailboxId(r.mailbox_id), uid=int(r.uid), blob_id=BlobId(r.blob_id),
                         size=int(r.size), internal_date=r.internal_date,
                         flags=frozenset(r.flags.split()) if r.flags else frozenset(),
                         modseq=int(r.modseq))


def to_queued_message(r: Row[Any]) -> QueuedMessage:
    return QueuedMessage(id=QueueId(r.id), sender=r.sender, blob_id=BlobId(r.blob_id), size=int(r.size),
                         priority=Priority(r.priority), created_at=r.created_at,
                         expires_at=r.expires_at, dsn_ret=DsnRet(r.dsn_ret) if r.dsn_ret else None,
                         dsn_envid=r.dsn_envid, smtputf8=bool(r.smtputf8),
                         body_8bit=bool(r.body_8bit), require_tls=bool(r.require_tls),
                         tls_optional=bool(r.tls_optional))


def to_recipient(r: Row[Any]) -> QueueRecipient:
    return QueueRecipient(
        id=RecipientId(r.id), queue_id=QueueId(r.queue_id), address=r.address, domain=r.domain,
        status=RecipientStatus(r.status), attempts=int(r.attempts), next_attempt_at=r.next_attempt_at,
        last_reply=r.last_reply,
        notify=frozenset(DsnNotify(v) for v in r.notify.split(",")) if r.notify else frozenset(),
        orcpt=r.orcpt)


def attrs_json(attrs: Sequence[tuple[str, str]]) -> str:
    return json.dumps(dict(attrs))


def to_event(r: Row[Any]) -> Event:
    raw = json.loads(r.attrs) if r.attrs else {}
    return Event(id=EventId(r.id), at=r.at, kind=EventKind(r.kind),
                 queue_id=QueueId(r.queue_id) if r.queue_id is not None else None,
                 recipient=r.recipient, detail=r.detail,
                 attrs=tuple((str(k), str(v)) for k, v in raw.items()))
