"""Signed Message-IDs: the msg-id of a message we send names what it was, so that a reply (whose
In-Reply-To and References repeat it, RFC 5322 3.6.4) maps back to it with no table per message.

Theory of operation
-------------------
A reply names the message it answers by that message's Message-ID: In-Reply-To holds the
parent's id, References the parent's References plus the parent's id (RFC 5322 3.6.4). So when
our Message-ID carries the facts of the send, a reply arriving at the MX says which send it
answers, and nothing has to be stored per message to look it up. The msg-id we write is

    <mp1.TOKEN@sending-domain>

where TOKEN is 30 octets in lower-case base32 without padding, exactly 48 characters:

    kind (1) | fields (12) | nonce (7) | tag (10)

* kind 1, a campaign message: campaign id (48 bits) then contact id (48 bits) — what the
  campaign builder knows (the queue id is chosen after the message is built; the campaign's
  send row maps the pair to it). kind 2, any other message: the queue id (new_queue_id's
  base-31 number, 96 bits, as in message.verp).
* nonce: 56 random bits, so two messages to one contact of one campaign (a test send, a resent
  pending row) still get different ids (RFC 5322 3.6.4: a msg-id is unique). A kind 2 id may
  derive it from the queue id instead (web.messages_api): the queue id is unique per message
  already, and two builds of one idempotent request must give one id.
* tag: HMAC-SHA256 (RFC 2104) under the secret, over a label and the 20 octets before it, cut
  to 80 bits (what message.verp uses: guessing stays hopeless), compared in constant time.
  Without the secret nobody can make an id naming one of our sends, so a forged In-Reply-To
  cannot put "replied" events on campaigns or contacts of their choosing.
* base32 survives case folding (nothing in the mail path should change a msg-id, but a tool
  that upper-cases one still leaves it readable); 30 octets fill 48 characters exactly, so no
  spare bits give a second spelling. The domain is not signed (an operator may rename it).
* "mp1." marks the layout: a reply's references are looked at only when they have the shape,
  and a later layout can use another marker.

Several secrets may be given (newest first): ids signed with a rotated-out key still verify.

Reading a reply (`find_origin`): In-Reply-To first (the parent), then References from the
newest to the oldest (nearest ancestor first); the first id that verifies wins. A reply's
References may be long and hostile, so each field is read up to MAX_FIELD characters and at
most MAX_CANDIDATES ids of our shape are verified: the work per message is bounded whatever
arrives.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailprime.domain.ids import (
    QUEUE_ID_OCTETS,
    CampaignId,
    ContactId,
    QueueId,
    queue_id_number,
    queue_id_of_number,
)
from mailprime.message.keyed_mac import fresh_tag, keyed

MARKER = "mp1."
TOKEN_LENGTH = 48  # base32 of 30 octets, no padding
MIN_SECRET = 16  # octets
MAX_FIELD = 65_536  # characters of one In-Reply-To or References value that are read
MAX_CANDIDATES = 16  # ids of our shape verified per reply (each against every key)
MAX_DOMAIN = 253  # RFC 1035 2.3.4 (a name's text form)

_KIND_CAMPAIGN = 1
_KIND_QUEUE = 2
_ID_OCTETS = 6  # a campaign or contact id: 48 bits (2**48 rows is more than any table holds)
_NONCE_OCTETS = 7
_TAG_OCTETS = 10
_PAYLOAD_OCTETS = 1 + 2 * _ID_OCTETS + _NONCE_OCTETS  # == 1 + QUEUE_ID_OCTETS + _NONCE_OCTETS
_LABEL = b"mailprime-msgid-1"
_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
# One of our msg-ids inside a field value: the token is captured, the domain is not checked.
_CANDIDATE = re.compile(r"<\s*mp1\.([a-z2-7]{48})@[^>\s]{1,255}\s*>", re.IGNORECASE)

assert _PAYLOAD_OCTETS == 1 + QUEUE_ID_OCTETS + _NONCE_OCTETS
assert (_PAYLOAD_OCTETS + _TAG_OCTETS) * 8 == TOKEN_LENGTH * 5



class MsgIdTokenError(ValueError):
    """A secret that cannot sign."""


@dataclass(frozen=True, slots=True)
class CampaignOrigin:
    """A campaign message: the campaign and the contact it went to."""

    campaign_id: CampaignId
    contact_id: ContactId


@dataclass(frozen=True, slots=True)
class QueueOrigin:
    """Any other message we queued (the transactional API): its queue id."""

    queue_id: QueueId


Origin = CampaignOrigin | QueueOrigin


@dataclass(frozen=True, slots=True)
class Reference:
    """A msg-id in a reply that names one of our sends."""

    message_id: str  # as found, "<...>"
    origin: Origin


def _fields(origin: Origin) -> bytes | None:
    if isinstance(origin, CampaignOrigin):
        limit = 2 ** (8 * _ID_OCTETS)
        if not (0 <= origin.campaign_id < limit and 0 <= origin.contact_id < limit):
            return None
        return (bytes([_KIND_CAMPAIGN]) + origin.campaign_id.to_bytes(_ID_OCTETS, "big")
                + origin.contact_id.to_bytes(_ID_OCTETS, "big"))
    number = queue_id_number(origin.queue_id)
    if number is None:
        return None
    return bytes([_KIND_QUEUE]) + number.to_bytes(QUEUE_ID_OCTETS, "big")


def _origin(payload: bytes) -> Origin | None:
    kind, body = payload[0], payload[1:1 + 2 * _ID_OCTETS]
    if kind == _KIND_CAMPAIGN:
        return CampaignOrigin(CampaignId(int.from_bytes(body[:_ID_OCTETS], "big")),
                              ContactId(int.from_bytes(body[_ID_OCTETS:], "big")))
    if kind == _KIND_QUEUE:
        return QueueOrigin(queue_id_of_number(int.from_bytes(body, "big")))
    return None



# Lower-case base32 (RFC 4648 6) without a Python loop: the token's 240 bits as one integer
# whose 48 five-bit groups are moved apart, in six shift-and-mask steps, until each sits in the
# low bits of an octet of its own (group j from bit 5j to bit 8j: a move of 3j, done as the
# moves for each binary digit of j, the largest first, so that no group lands on another);
# bytes.translate then maps the 48 octets to the alphabet. The same text as
# base64.b32encode(...).lower(); measured ~0.6 us, where b32encode (Python code working five
# octets at a time) costs ~2.1 and a list of ten-bit lookups ~3.2 (a campaign makes one id per
# message).
def _b32_steps() -> tuple[tuple[int, int, int], ...]:
    steps = []
    for bit in range(5, -1, -1):  # TOKEN_LENGTH == 48 groups: j < 64
        keep = move = 0
        for j in range(TOKEN_LENGTH):
            high = j & ~((2 << bit) - 1)  # the digits of j already moved for
            group = 0x1F << (8 * high + 5 * (j - high))
            if j >> bit & 1:
                move |= group
            else:
                keep |= group
        steps.append((keep, move, 3 << bit))
    return tuple(steps)


_B32_STEPS = _b32_steps()
_B32_TABLE = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[i] if i < 32 else 0 for i in range(256))


def _b32_token(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    for keep, move, shift in _B32_STEPS:
        number = (number & keep) | ((number & move) << shift)
    return number.to_bytes(TOKEN_LENGTH, "big").translate(_B32_TABLE).decode("ascii")


@functools.lru_cache(maxsize=64)  # a campaign gives the same sending domain for every message
def _id_right(domain: str) -> str | None:
    right = domain.strip().rstrip(".").lower()
    if not right or len(right) > MAX_DOMAIN or not _DOMAIN.fullmatch(right):
        return None
    return right


class MsgIdCodec:
    """Makes and reads signed msg-ids with a list of secrets (newest first). `nonce` gives the
    nonce octets: random by default; tests pass a fixed one to compare ids byte for byte, and
    web.messages_api one made from the queue id (the same message built twice, one id)."""

    def __init__(self, secrets: Sequence[bytes], *,
                 nonce: Callable[[int], bytes] = _random.token_bytes) -> None:
        if not secrets or any(len(s) < MIN_SECRET for s in secrets):
            raise MsgIdTokenError(f"a Message-ID secret needs at least {MIN_SECRET} octets")
        self.secrets = tuple(secrets)
        self._nonce = nonce
        # token() copies it: the same tag as fresh_tag(), cheaper (message.keyed_mac).
        self._mac = keyed(self.secrets[0], _LABEL)

    def token(self, origin: Origin) -> str | None:
        """The 48-character token, or None when an id does not fit its field (a queue id not
        made by new_queue_id, an id of 2**48 or more): the caller then writes a random msg-id."""
        fields = _fields(origin)
        if fields is None:
            return None
        nonce = self._nonce(_NONCE_OCTETS)
        if len(nonce) != _NONCE_OCTETS:
            raise MsgIdTokenError(f"a nonce is {_NONCE_OCTETS} octets")
        payload = fields + nonce
        mac = self._mac.copy()
        mac.update(payload)
        return _b32_token(payload + mac.digest()[:_TAG_OCTETS])

    def make(self, origin: Origin, domain: str) -> str | None:
        """`<mp1.TOKEN@domain>`, or None (see `token`; or a domain that is not a host name, which
        would not make a dot-atom id-right, RFC 5322 3.6.4)."""
        right = _id_right(domain)
        if right is None:
            return None
        token = self.token(origin)
        return None if token is None else f"<{MARKER}{token}@{right}>"

    def verify(self, token: str) -> Origin | None:
        """What a 48-character token names, if one of our secrets signed it; else None."""
        if len(token) != TOKEN_LENGTH:
            return None
        try:
            raw = base64.b32decode(token.upper())
        except (binascii.Error, ValueError):
            return None
        payload, tag = raw[:_PAYLOAD_OCTETS], raw[_PAYLOAD_OCTETS:]
        good = False
        for secret in self.secrets:  # every key, no early exit: the time says nothing
            good |= hmac.compare_digest(tag, fresh_tag(secret, _LABEL, payload, _TAG_OCTETS))
        return _origin(payload) if good else None

    def read(self, message_id: str) -> Origin | None:
        """What one msg-id ("<mp1.TOKEN@domain>") names, or None when it is not one of ours."""
        m = _CANDIDATE.fullmatch(message_id.strip())
        return self.verify(m.group(1)) if m else None

    def find_origin(self, in_reply_to: str | None, references: str | None) -> Reference | None:
        """The send a reply answers (see the module doc for the order and the bounds)."""
        seen: set[str] = set()
        checked = 0
        for ids in (_ids(in_reply_to), _ids(references)[::-1]):
            for message_id, token in ids:
                key = token.lower()
                if key in seen:
                    continue
                if checked >= MAX_CANDIDATES:
                    return None
                seen.add(key)
                checked += 1
                origin = self.verify(token)
                if origin is not None:
                    return Reference(message_id, origin)
        return None


def _ids(value: str | None) -> list[tuple[str, str]]:
    """(msg-id, token) of each id of our shape in the first MAX_FIELD characters of a value."""
    if not value or MARKER not in value[:MAX_FIELD].lower():
        return []
    return [(re.sub(r"\s+", "", m.group()), m.group(1))
            for m in _CANDIDATE.finditer(value, 0, MAX_FIELD)]


__all__ = [
    "MARKER",
    "MAX_CANDIDATES",
    "MAX_FIELD",
    "TOKEN_LENGTH",
    "CampaignOrigin",
    "MsgIdCodec",
    "MsgIdTokenError",
    "Origin",
    "QueueOrigin",
    "Reference",
]
