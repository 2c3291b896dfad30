"""Signed tokens for the links in sent mail: the open pixel, click redirects, unsubscribe.

Theory of operation
-------------------
A link in a message must say, to our web endpoints, which message and recipient it was sent to
(and for a click where to go, for an unsubscribe which address and list) without letting anyone
make such a link for another recipient: a guessable link would let a stranger unsubscribe
people (or count fake opens), and a click link that took any URL would be an open redirect
for phishers riding on the sender's domain. So the link carries its facts and a tag:

    version (1) | key id (2) | purpose (1) | subject | purpose fields | tag (16)

written in URL-safe base64 without padding (RFC 4648 5), safe in a path segment.

* subject: a campaign send (campaign id, contact id) or a message send (queue id, recipient
  row id). Numbers are LEB128 varints, strings a varint length then UTF-8.
* purpose fields: a click's target URL (the URL itself: a redirect then needs no look-up, and
  the URL is what is signed, so the redirect goes nowhere else); an unsubscribe's address, the
  sending domain (the suppression's scope follows [bounces] scope when it is applied) and the
  list id (0: none). The address is in the token because the queue row a transactional
  message's recipient came from is deleted once delivered, while the link must still work.
* tracking (TRACK and LINK): a campaign message's click links pair two tokens, so that a message
  costs one signature however many links it has (an HMAC per link was most of the work of
  building a tracked message). LINK signs the campaign id and a target URL: the same for every
  recipient, it is made once per campaign and URL. TRACK signs the send alone (campaign and
  contact): made once per message, it is the open pixel's token and the second half of each
  click link, `/t/c/<LINK>/<TRACK>`. The redirect takes the URL only from a valid LINK token
  and counts the click only if both name the same campaign, so the pair is no more an open
  redirect than a CLICK token is, and a recipient's TRACK token is an HMAC like any other (not
  enumerable). Swapping in another recipient's TRACK token needs that token, which only that
  recipient's mail holds. A LINK token has no subject: its fields are a scope octet (1: a
  campaign), the campaign id and the URL. OPEN and CLICK tokens (one signature per link) are
  still read, for the mail sent before.
* a double opt-in confirmation (CONFIRM) has no subject, only its fields: the contact id, an
  expiry (Unix seconds, checked by the web layer with its clock) and the list ids.
* tag: HMAC-SHA256 (RFC 2104) under the secret, over a fixed label and every octet before it,
  cut to 128 bits; compared with hmac.compare_digest (constant time). The purpose is inside
  what is signed, so an open token is not a click token. Without the secret nobody can make or
  alter a token, and the ids inside cannot be enumerated into working links.
* key id: two octets of SHA-256 of the key. Several keys may be loaded (newest first); tokens
  are signed with the newest and checked with the key their id names, so rotating the secret
  keeps the links in mail already sent working while the old key stays in the file.
* canonical form: a token is accepted only if it is exactly what we would write for what it
  says (base64 re-encoded, fields re-serialised): base64's spare low bits, overlong varints or
  trailing octets give no second spelling of one token. Any changed character is refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, RecipientId
from mailprime.message.keyed_mac import fresh_tag, keyed

VERSION = 1
TAG_OCTETS = 16  # 128 bits of HMAC-SHA256 (RFC 2104 5: at least half the output is plenty)
KID_OCTETS = 2
MIN_SECRET = 16
MAX_TOKEN = 4096  # characters: refused unread beyond this (a URL of 2048 + the rest fits)
MAX_URL = 2048  # the de-facto limit of browsers and mail clients for a link
MAX_ADDRESS = 320  # RFC 5321 4.5.3.1.1 + 4.5.3.1.2: 64 + 1 + 255
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_QUEUE_ID = 32
_LABEL = b"mailprime-link-1"
_KID_LABEL = b"mailprime-link-kid"


class Purpose(enum.IntEnum):
    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3
    CONFIRM = 4
    TRACK = 5  # a send's recipient: the open pixel, and the recipient half of a click link
    LINK = 6  # a campaign's click target: the target half of a click link


class TokenError(ValueError):
    """What cannot be made into a token (a URL that is not http(s), a field too long)."""


@dataclass(frozen=True, slots=True)
class CampaignRecipient:
    campaign_id: CampaignId
    contact_id: ContactId


@dataclass(frozen=True, slots=True)
class MessageRecipient:
    queue_id: QueueId
    recipient_id: RecipientId


Subject = CampaignRecipient | MessageRecipient


@dataclass(frozen=True, slots=True)
class OpenToken:
    subject: Subject


@dataclass(frozen=True, slots=True)
class ClickToken:
    subject: Subject
    url: str


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    subject: Subject
    address: str  # lower-cased
    sending_domain: str = ""  # the From/envelope domain the mail was sent from
    list_id: ListId | None = None


@dataclass(frozen=True, slots=True)
class ConfirmToken:
    """A double opt-in confirmation link (web/subscribe.py): the contact, the lists it asked to
    join, and until when (Unix seconds) the link works. It names no send, so it has no subject;
    the expiry is inside what is signed, so nobody can extend it."""

    contact_id: ContactId
    list_ids: tuple[ListId, ...]
    expires: int


@dataclass(frozen=True, slots=True)
class TrackToken:
    """A send's recipient, for its tracking links: the open pixel, and with a LinkToken a click
    (see the module doc). One per message, whatever the number of links."""

    subject: Subject


@dataclass(frozen=True, slots=True)
class LinkToken:
    """A campaign's click target, the same for all its recipients (see the module doc)."""

    campaign_id: CampaignId
    url: str


Token = OpenToken | ClickToken | UnsubscribeToken | ConfirmToken | TrackToken | LinkToken
T = TypeVar("T", OpenToken, ClickToken, UnsubscribeToken, ConfirmToken, TrackToken, LinkToken)

_PURPOSE: dict[type[Token], Purpose] = {OpenToken: Purpose.OPEN, ClickToken: Purpose.CLICK,
                                        UnsubscribeToken: Purpose.UNSUBSCRIBE,
                                        ConfirmToken: Purpose.CONFIRM, TrackToken: Purpose.TRACK,
                                        LinkToken: Purpose.LINK}
_CAMPAIGN_SCOPE = 1  # the first octet of a LINK body: whose link it is (only campaigns so far)
MAX_CONFIRM_LISTS = 20  # lists one confirmation link may name (one subscribe form's choices)


@functools.lru_cache(maxsize=1024)  # a campaign signs the same few targets for every contact
def check_url(url: str) -> str:
    """The URL if a click may lead to it: absolute http(s) with a host, printable ASCII (a
    mail's link is percent-encoded already), at most MAX_URL characters."""
    if not url or len(url) > MAX_URL:
        raise TokenError(f"a link target is 1 to {MAX_URL} characters")
    if not (url.isascii() and url.isprintable()) or " " in url:  # all of 0x21-0x7E
        raise TokenError("a link target must be printable ASCII without spaces (percent-encode it)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise TokenError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TokenError("a link target must be an absolute http or https URL")
    return url


# ---- octets ---------------------------------------------------------------------------------

_ONE_OCTET = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:  # a campaign id, a list id: most often one octet
        return _ONE_OCTET[n]
    if 0 <= n < 0x200000:  # a contact id: two or three octets, written out without the loop
        if n < 0x4000:
            return bytes((n & 0x7F | 0x80, n >> 7))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0:
        raise TokenError("ids are not negative")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise TokenError(f"a token field is at most {limit} octets")
    return _varint(len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("short")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def string(self, limit: int) -> str:
        length = self.varint()
        if length > limit or self.pos + length > len(self.data):
            raise ValueError("string too long")
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8")


def _subject_octets(subject: Subject) -> bytes:
    if isinstance(subject, CampaignRecipient):
        return b"\x01" + _varint(subject.campaign_id) + _varint(subject.contact_id)
    if not subject.queue_id.isascii() or not subject.queue_id.isalnum():
        raise TokenError("a queue id is letters and digits")
    return b"\x02" + _string(subject.queue_id, MAX_QUEUE_ID) + _varint(subject.recipient_id)


def _read_subject(r: _Reader) -> Subject:
    kind = r.byte()
    if kind == 1:
        return CampaignRecipient(CampaignId(r.varint()), ContactId(r.varint()))
    if kind == 2:
        return MessageRecipient(QueueId(r.string(MAX_QUEUE_ID)), RecipientId(r.varint()))
    raise ValueError("unknown subject")


def _confirm_octets(token: ConfirmToken) -> bytes:
    if not token.list_ids or len(token.list_ids) > MAX_CONFIRM_LISTS:
        raise TokenError(f"a confirmation names 1 to {MAX_CONFIRM_LISTS} lists")
    return (_varint(token.contact_id) + _varint(token.expires) + _varint(len(token.list_ids))
            + b"".join(_varint(list_id) for list_id in token.list_ids))


def _read_confirm(r: _Reader) -> ConfirmToken:
    contact_id, expires, count = r.varint(), r.varint(), r.varint()
    if not 1 <= count <= MAX_CONFIRM_LISTS:
        raise ValueError("list count")
    return ConfirmToken(ContactId(contact_id), tuple(ListId(r.varint()) for _ in range(count)),
                        expires)


def _body(token: Token) -> bytes:
    if isinstance(token, ConfirmToken):  # no subject: it names a contact, not a send
        return bytes([Purpose.CONFIRM]) + _confirm_octets(token)
    if isinstance(token, LinkToken):  # no recipient: one per campaign and target
        return (bytes([Purpose.LINK, _CAMPAIGN_SCOPE]) + _varint(token.campaign_id)
                + _string(check_url(token.url), MAX_URL))
    out = bytes([_PURPOSE[type(token)]]) + _subject_octets(token.subject)
    if isinstance(token, ClickToken):
        out += _string(check_url(token.url), MAX_URL)
    elif isinstance(token, UnsubscribeToken):
        out += (_string(token.address.lower(), MAX_ADDRESS)
                + _string(token.sending_domain.lower(), MAX_DOMAIN) + _varint(token.list_id or 0))
    return out


def _read_body(data: bytes) -> Token:
    r = _Reader(data)
    purpose = r.byte()
    token: Token
    if purpose == Purpose.CONFIRM:
        token = _read_confirm(r)
        if r.pos != len(data):
            raise ValueError("trailing octets")
        return token
    if purpose == Purpose.LINK:
        if r.byte() != _CAMPAIGN_SCOPE:
            raise ValueError("unknown link scope")
        token = LinkToken(CampaignId(r.varint()), check_url(r.string(MAX_URL)))
        if r.pos != len(data):
            raise ValueError("trailing octets")
        return token
    subject = _read_subject(r)
    if purpose == Purpose.OPEN:
        token = OpenToken(subject)
    elif purpose == Purpose.TRACK:
        token = TrackToken(subject)
    elif purpose == Purpose.CLICK:
        token = ClickToken(subject, check_url(r.string(MAX_URL)))
    elif purpose == Purpose.UNSUBSCRIBE:
        address, domain, list_id = r.string(MAX_ADDRESS), r.string(MAX_DOMAIN), r.varint()
        token = UnsubscribeToken(subject, address, domain, ListId(list_id) if list_id else None)
    else:
        raise ValueError("unknown purpose")
    if r.pos != len(data):
        raise ValueError("trailing octets")
    return token


# ---- signing ------------------------------------------------------------------------------

def key_id(secret: bytes) -> bytes:
    return hashlib.sha256(_KID_LABEL + secret).digest()[:KID_OCTETS]



_URLSAFE = bytes.maketrans(b"+/", b"-_")


class TokenSigner:
    """Signs with the newest key, verifies with whichever loaded key the token names."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(len(s) < MIN_SECRET for s in secrets):
            raise TokenError(f"a link secret needs at least {MIN_SECRET} octets")
        self._current = secrets[0]
        self._current_id = key_id(self._current)  # once: sign() runs for every message
        # Each sign() copies it: the same tag as fresh_tag(), cheaper (message.keyed_mac).
        self._mac = keyed(self._current, _LABEL)
        self._head = bytes([VERSION]) + self._current_id
        # The keys as loaded, newest first: the signed Message-IDs (message.msgid_token) use
        # the same link keys, under their own HMAC label.
        self.secrets: tuple[bytes, ...] = tuple(secrets)
        self._keys: dict[bytes, list[bytes]] = {}
        for secret in secrets:  # two keys may share an id: both are tried
            self._keys.setdefault(key_id(secret), []).append(secret)

    def sign(self, token: Token) -> str:
        return self._signed(self._head + _body(token))

    def _signed(self, head: bytes) -> str:
        """The token text of `head` (version, key id and body) and its tag."""
        mac = self._mac.copy()
        mac.update(head)
        raw = head + mac.digest()[:TAG_OCTETS]
        # base64.urlsafe_b64encode, without its Python wrapper: the same text.
        return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=") \
            .decode("ascii")

    def recipients(self, campaign_id: CampaignId, sending_domain: str = "",
                   list_id: ListId | None = None) -> RecipientTokens:
        """The signer of one campaign's per-recipient tokens (see RecipientTokens)."""
        return RecipientTokens(self, campaign_id, sending_domain, list_id)

    def verify(self, text: str, kind: type[T]) -> T | None:
        """The token `text` stands for, if it is one of ours, of type `kind`, and unaltered;
        else None (the caller answers 404: nothing says why, to a prober)."""
        if not text or len(text) > MAX_TOKEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != text:
            return None  # not the canonical spelling (spare bits set, or stray characters)
        if len(raw) < 1 + KID_OCTETS + 1 + TAG_OCTETS or raw[0] != VERSION:
            return None
        if raw[1 + KID_OCTETS] != _PURPOSE[kind]:
            # Not the purpose asked for: refused before the HMAC (the purpose octet is no
            # secret, it is in the token as written), so that a caller that accepts two kinds
            # (the pixel: TRACK or the older OPEN) pays for one HMAC, not two.
            return None
        head, tag = raw[:-TAG_OCTETS], raw[-TAG_OCTETS:]
        candidates = self._keys.get(head[1:1 + KID_OCTETS], [])
        # compare_digest for every candidate, no early exit: the time does not say which.
        good = False
        for secret in candidates:
            good |= hmac.compare_digest(tag, fresh_tag(secret, _LABEL, head, TAG_OCTETS))
        if not good:
            return None
        body = head[1 + KID_OCTETS:]
        try:
            token = _read_body(body)
            canonical = _body(token)
        except ValueError:  # TokenError and UnicodeDecodeError are ValueErrors
            return None
        if not isinstance(token, kind) or canonical != body:
            return None
        return token



class RecipientTokens:
    """The two tokens a campaign signs per message, the TrackToken and the UnsubscribeToken of
    a contact (CampaignRecipient), with what they share worked out once: the octets in front
    of the contact id (version, key id, purpose, subject kind, campaign id) and, for the
    unsubscribe token, those after the address (sending domain, list id). `track(c)` is
    sign(TrackToken(CampaignRecipient(campaign, c))) and `unsubscribe(c, a)` is
    sign(UnsubscribeToken(CampaignRecipient(campaign, c), a, domain, list_id)), octet for octet
    (tested): the same body as _body() writes, without the dataclasses and type tests."""

    def __init__(self, signer: TokenSigner, campaign_id: CampaignId, sending_domain: str,
                 list_id: ListId | None) -> None:
        self._signer = signer
        subject = b"\x01" + _varint(campaign_id)
        self._track = signer._head + bytes([Purpose.TRACK]) + subject
        self._unsubscribe = signer._head + bytes([Purpose.UNSUBSCRIBE]) + subject
        self._unsubscribe_tail = (_string(sending_domain.lower(), MAX_DOMAIN)
                                  + _varint(list_id or 0))

    def track(self, contact_id: ContactId) -> str:
        return self._signer._signed(self._track + _varint(contact_id))

    def unsubscribe(self, contact_id: ContactId, address: str) -> str:
        return self._signer._signed(self._unsubscribe + _varint(contact_id)
                                    + _string(address.lower(), MAX_ADDRESS)
                                    + self._unsubscribe_tail)


__all__ = [
    "CampaignRecipient",
    "ClickToken",
    "ConfirmToken",
    "LinkToken",
    "MessageRecipient",
    "OpenToken",
    "Purpose",
    "RecipientTokens",
    "Subject",
    "Token",
    "TokenError",
    "TokenSigner",
    "TrackToken",
    "UnsubscribeToken",
    "check_url",
    "key_id",
]
