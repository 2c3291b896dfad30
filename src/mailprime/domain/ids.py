"""Identifiers. NewTypes keep a queue id from being passed where an account id is expected."""

from __future__ import annotations

import os
import time
from typing import NewType

AccountId = NewType("AccountId", int)
MailboxId = NewType("MailboxId", int)
BlobId = NewType("BlobId", int)
QueueId = NewType("QueueId", str)
RecipientId = NewType("RecipientId", int)
EventId = NewType("EventId", int)
# Marketing (issue 5)
ContactId = NewType("ContactId", int)
ListId = NewType("ListId", int)
SegmentId = NewType("SegmentId", int)
TemplateId = NewType("TemplateId", int)
CampaignId = NewType("CampaignId", int)
ApiKeyId = NewType("ApiKeyId", int)

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"


def new_queue_id() -> QueueId:
    """A sortable, grep-friendly id like Postfix's long queue ids: time (ms) then 50 random bits."""
    n = (int(time.time() * 1000) << 50) | int.from_bytes(os.urandom(7), "big") >> 6
    out = []
    while n:
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return QueueId("".join(reversed(out)).rjust(18, "0"))
