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


QUEUE_ID_LENGTH = 18  # new_queue_id pads to this; ids grow to 19 digits from about 2024 on
# Octets that hold any queue id's number (signed tokens carry it): 31**19 < 2**96, good until
# the millisecond clock passes 2**46 (year 4200).
QUEUE_ID_OCTETS = 12


def new_queue_id() -> QueueId:
    """A sortable, grep-friendly id like Postfix's long queue ids: time (ms) then 50 random bits."""
    return queue_id_of_number((int(time.time() * 1000) << 50)
                              | int.from_bytes(os.urandom(7), "big") >> 6)


# Two digits at a time: half the divisions (a queue id is made for every message accepted).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_PAIR_BASE = len(_PAIRS)


def queue_id_of_number(n: int) -> QueueId:
    """The queue id whose number is `n` (`queue_id_number`'s inverse)."""
    out = []
    while n:
        n, r = divmod(n, _PAIR_BASE)
        out.append(_PAIRS[r])
    # The top pair may start with a zero digit: gone before the padding, as one digit at a
    # time would never have written it.
    return QueueId("".join(reversed(out)).lstrip("0").rjust(QUEUE_ID_LENGTH, "0"))


def queue_id_number(queue_id: str) -> int | None:
    """A queue id as a number that fits QUEUE_ID_OCTETS, when `queue_id_of_number` gives the
    same id back (so a token carrying the number names exactly this id); else None."""
    if len(queue_id) < QUEUE_ID_LENGTH or (len(queue_id) > QUEUE_ID_LENGTH and queue_id[0] == "0"):
        return None
    n = 0
    for ch in queue_id:
        digit = _ALPHABET.find(ch)
        if digit < 0:
            return None
        n = n * len(_ALPHABET) + digit
    return n if n < 2 ** (8 * QUEUE_ID_OCTETS) else None
