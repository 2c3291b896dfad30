"""Replies to mail we sent: a REPLIED event when the MX files a message that answers one of ours.

Theory of operation
-------------------
Campaign and API messages carry a signed Message-ID (message.msgid_token) that names the send:
a campaign and contact, or a queue id. A reply repeats it in In-Reply-To and References (RFC
5322 3.6.4), so once the MX has accepted a message for a local mailbox (services.inbound calls
`on_accepted` after the durable accept; the reply is filed as usual, the event is extra) we:

1. look cheaply: without "mp1." (our ids' marker) anywhere in the header section, nothing more
   is done — the common case costs one scan at C speed;
2. read In-Reply-To and References (bounded, and at most a few ids verified: msgid_token's
   limits) for the first id one of our keys signed; none: not a reply to us (an id merely
   shaped like ours, or forged, counts as none);
3. map it: a queue id is the original itself; a campaign and contact go through the campaign's
   send row to the queue id of that contact's message. No row (a test send, which records no
   rows, or a contact since erased — its rows go with it, and nothing is recorded about an
   erased person) means nothing is recorded;
4. skip what no person wrote or what we do not believe: an auto-reply (RFC 3834's
   Auto-Submitted with any value but "no"; as common practice also X-Autoreply, and
   Precedence auto_reply, bulk or junk — what vacation responders and list robots write) and a
   message the MX filed into Junk (services.mx_auth: DMARC failure or spam; the caller says
   so). They are filed all the same; a skip is logged ("reply-ignored") only for a message that
   did name one of our ids;
5. record once: an event already recorded for this original with this reply's identity (its
   Message-ID, else a hash of its header section) means the same reply came again (a client
   that did not see our 250 resends), and nothing new is recorded. Found among the original's
   events: an indexed look-up by queue id.

The event: kind REPLIED, queue id the original's, recipient the original recipient when known
(the campaign's contact) else the replying address; attrs campaign_id and contact_id (campaign
mail), from (the reply's first From address, else its envelope sender), original_queue_id,
reply (the identity), reply_queue_id (where the reply itself was filed) and in_reply_to (the id
that matched). The From address is the replier's own word: the signed id proves only that the
message answers our mail, which is what the event claims.

Recorded after the accept, not before: a reply the client never saw accepted is not a reply we
received. A crash between the two loses one event and never the message. A storage failure
here is logged; the client still gets its 250, the reply is stored.
"""

from __future__ import annotations

import hashlib
import logging
import re
from email.utils import getaddresses
from typing import Protocol

from mailprime.domain.campaigns import SendRecord
from mailprime.domain.errors import DomainError
from mailprime.domain.ids import CampaignId, ContactId, QueueId
from mailprime.domain.mail import EventKind
from mailprime.logline import emit
from mailprime.message.header_lexer import header_end, named_fields
from mailprime.message.msgid_token import CampaignOrigin, MsgIdCodec, Reference
from mailprime.services.suppression import MAX_EVENTS_READ
from mailprime.storage.ports import EventLog

log = logging.getLogger("mailprime.replies")

MAX_IDENTITY = 250  # a Message-ID kept in an attr; a longer one is hashed (as services.feedback)
MAX_FROM = 998  # characters of the From value parsed (RFC 5322 2.1.1: one line)
MAX_ADDRESS = 320  # RFC 5321 4.5.3.1.1 + 4.5.3.1.2
_MARKER = re.compile(rb"[mM][pP]1\.")
_FIELDS = (b"In-Reply-To", b"References", b"Message-ID", b"From", b"Auto-Submitted",
           b"X-Autoreply", b"Precedence")
# Precedence values that mark a message as sent by a program: common practice, not a standard
# (vacation responders and list robots write "bulk" or "junk", some "auto_reply").
_AUTOMATIC_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
_COMMENT = re.compile(r"\([^()]*\)")


class ReplyStore(EventLog, Protocol):
    """What the reply recorder reads and writes (the Store satisfies it)."""

    async def get_send(self, campaign_id: CampaignId, contact_id: ContactId) -> SendRecord | None:
        ...


class ReplyRecorder:
    def __init__(self, store: ReplyStore, codec: MsgIdCodec) -> None:
        self.store = store
        self.codec = codec

    async def on_accepted(self, head: bytes, *, sender: str, queue_id: QueueId,
                          session: str, junk: bool = False) -> bool:
        """Records the REPLIED event if the message `queue_id` (just accepted for a local
        mailbox, `head` its header section as received) answers mail we sent; True if it did.
        `junk`: the MX filed it into Junk (no event)."""
        if _MARKER.search(head) is None:
            return False
        fields: dict[bytes, str] = {}
        for field in named_fields(head, _FIELDS):
            fields.setdefault(field.name.lower(), field.value(head).decode("utf-8", "replace"))
        ref = self.codec.find_origin(fields.get(b"in-reply-to"), fields.get(b"references"))
        if ref is None:
            return False
        why = "filed as junk" if junk else _automatic(fields)
        if why:
            emit(log, queue_id, status="reply-ignored", in_reply_to=ref.message_id, reason=why,
                 session=session)
            return False
        replier = _first_address(fields.get(b"from", "")) or sender[:MAX_ADDRESS]
        try:
            return await self._record(ref, head, fields.get(b"message-id", ""), replier,
                                      queue_id=queue_id, session=session)
        except DomainError as exc:
            emit(log, queue_id, logging.ERROR, status="reply not recorded", reason=exc.message)
            return False

    async def _record(self, ref: Reference, head: bytes, message_id: str, replier: str, *,
                      queue_id: QueueId, session: str) -> bool:
        origin = ref.origin
        ids: tuple[tuple[str, str], ...] = ()
        if isinstance(origin, CampaignOrigin):
            send = await self.store.get_send(origin.campaign_id, origin.contact_id)
            if send is None or send.queue_id is None:
                emit(log, queue_id, status="reply-unmapped", in_reply_to=ref.message_id,
                     campaign=origin.campaign_id, contact=origin.contact_id, session=session)
                return False
            original, recipient = send.queue_id, send.email
            ids = (("campaign_id", str(origin.campaign_id)), ("contact_id", str(origin.contact_id)))
        else:
            original, recipient = origin.queue_id, replier
        identity = _identity(message_id, head)
        if await self._already(original, identity):
            emit(log, queue_id, status="reply-duplicate", original=original, reply=identity)
            return False
        await self.store.append(
            EventKind.REPLIED, original, recipient or None, f"reply from <{replier}>",
            (*ids, ("from", replier), ("original_queue_id", original), ("reply", identity),
             ("reply_queue_id", queue_id), ("in_reply_to", ref.message_id)))
        campaign = dict(ids)
        emit(log, queue_id, status="replied", original=original, from_=f"<{replier}>",
             campaign=campaign.get("campaign_id"), contact=campaign.get("contact_id"))
        return True

    async def _already(self, original: QueueId, identity: str) -> bool:
        mark = ("reply", identity)
        return any(e.kind is EventKind.REPLIED and mark in e.attrs
                   for e in await self.store.list_events(original, limit=MAX_EVENTS_READ))


def _automatic(fields: dict[bytes, str]) -> str:
    """Why the message was sent by a program and not a person ("" when nothing says so)."""
    submitted = _keyword(fields.get(b"auto-submitted"))
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    if b"x-autoreply" in fields:
        return "X-Autoreply"
    precedence = _keyword(fields.get(b"precedence"))
    if precedence in _AUTOMATIC_PRECEDENCE:
        return f"Precedence: {precedence}"
    return ""


def _keyword(value: str | None) -> str:
    """The leading keyword of a field value, lower case, without comments or parameters
    (RFC 3834 5: `Auto-Submitted: auto-replied (vacation); owner-email=...`)."""
    if value is None:
        return ""
    return _COMMENT.sub(" ", value[:MAX_FROM]).partition(";")[0].strip().lower()


def _identity(message_id: str, head: bytes) -> str:
    """What tells one reply from another when the same one arrives twice: its Message-ID, else
    a hash of its header section (a resent message is the same octets)."""
    mid = message_id.strip()
    if mid and len(mid) <= MAX_IDENTITY:
        return mid
    return "sha256:" + hashlib.sha256(head[:header_end(head)]).hexdigest()[:40]


def _first_address(value: str) -> str:
    """The first address in a From value ("" when none can be read)."""
    for _name, found in getaddresses([value[:MAX_FROM]]):
        address = found.strip()
        if "@" in address and len(address) <= MAX_ADDRESS:
            return address
    return ""


__all__ = ["ReplyRecorder", "ReplyStore"]
