"""VERP return paths: an envelope sender per recipient that names the message and the recipient,
signed so that a bounce arriving at it maps back to exactly one recipient and cannot be forged.

Theory of operation
-------------------
An asynchronous bounce (RFC 3464 DSN, or an MTA's own text) is sent to the envelope sender of the
message it reports on (RFC 5321 4.5.5, RFC 3464 2). Bounces are notoriously bad at saying which
recipient failed (forwarding, rewriting, formats without a DSN), so each recipient gets its own
return path `<prefix>+<token>@<bounce domain>` (Variable Envelope Return Path), and the token says
it for us. The token packs:

  queue id (new_queue_id's base-31 number, at least 18 digits: as a 96-bit integer)
  + recipient row id (48 bits)
  + issue day (days since 1970-01-01 UTC, 16 bits: good until 2149)
  + HMAC-SHA256(secret, "mailprime-verp-2" | those 20 octets), first 80 bits

= 30 octets, written in lower-case base32 without padding: exactly 48 characters. Why so:

* Case-insensitive. RFC 5321 2.4 lets the receiving host treat a local part case-sensitively,
  but MTAs and bounce generators do lower-case (or upper-case) addresses; base32 survives both,
  so decoding folds case first.
* Short enough. A local part is at most 64 octets (RFC 5321 4.5.3.1.1); "bounces+" plus 48 is
  56. A prefix longer than 15 characters is refused (`max_prefix`). The issue day took 16 of
  the recipient id's 64 bits rather than making the token longer: 2**48 recipient rows is more
  than any queue will hold, and a longer token would leave a prefix of 11 characters.
* Unforgeable. Without the secret nobody can make a token for another message or recipient, so
  a forged DSN cannot suppress arbitrary addresses; 80 bits make guessing hopeless, and the tag
  is compared in constant time (hmac.compare_digest). The bounce domain is not signed: an
  operator may move it, and bounces for mail sent before still arrive at the old one.
* Bounded in time. A token is a capability, and one seen once (in a bounce, in a forwarded
  message's Return-Path) would otherwise work for ever; the signed issue day lets the MX refuse
  a token older than a configured age (`age_days`; services.feedback refuses it at RCPT). Real
  bounces come within the sender's retry period (days), feedback-loop reports within hours.
* Checkable at RCPT. The token is verified without storage, so a bad one is refused at RCPT TO
  (550 5.1.1) before any data is read.

Several secrets may be given to `decode` (the current one first): a rotated secret keeps
accepting bounces for mail signed with the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailprime.domain.ids import (
    QUEUE_ID_OCTETS,
    QueueId,
    RecipientId,
    queue_id_number,
    queue_id_of_number,
)

# RFC 5321 4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_PART = 64
TOKEN_LENGTH = 48  # base32 of 30 octets, no padding
SEPARATOR = "+"
MAX_PREFIX = MAX_LOCAL_PART - TOKEN_LENGTH - len(SEPARATOR)  # 15
MIN_SECRET = 16  # octets; init writes 32 random ones

_RCPT_OCTETS = 6
_DAY_OCTETS = 2  # days since the Unix epoch: 65535 of them reach 2149-06-06
_TAG_OCTETS = 10  # 80 bits of HMAC-SHA256 (RFC 2104 5: at least half the output, or 80 bits)
# The layout's version: a token of another layout (version 1 had no day) never verifies.
_DOMAIN_TAG = b"mailprime-verp-2"
_DAY_SECONDS = 86400
_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class VerpError(ValueError):
    """A prefix, secret or queue id that cannot make a VERP address."""


@dataclass(frozen=True, slots=True)
class VerpTarget:
    """What a valid token names: the message and the recipient row the bounce is about."""

    queue_id: QueueId
    recipient_id: RecipientId
    day: int  # the issue day: days since 1970-01-01 UTC (`utc_day`)


def utc_day(timestamp: float) -> int:
    """Days since 1970-01-01 UTC of a Unix time: the day a token is issued on."""
    return int(timestamp // _DAY_SECONDS)


def check_prefix(prefix: str) -> str:
    """The prefix, lower-cased; VerpError unless 1..15 of [a-z0-9._-] (no "+", no edge dots)."""
    p = prefix.strip().lower()
    if not p or len(p) > MAX_PREFIX:
        raise VerpError(f"VERP prefix must be 1 to {MAX_PREFIX} characters (RFC 5321 4.5.3.1.1 "
                        f"leaves {MAX_PREFIX} beside a {TOKEN_LENGTH}-character token)")
    if not set(p) <= _PREFIX_CHARS or p.startswith(".") or p.endswith(".") or ".." in p:
        raise VerpError(f"VERP prefix {prefix!r}: use letters, digits, '.', '-' or '_'")
    return p


def _tag(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN_TAG + payload, hashlib.sha256).digest()[:_TAG_OCTETS]


class VerpCodec:
    """Makes and reads VERP addresses with one prefix and a list of secrets (newest first).
    `clock` gives the Unix time the issue day is taken from (the wall clock unless a test or the
    runtime passes its own)."""

    def __init__(self, secrets: Sequence[bytes], prefix: str = "bounces", *,
                 clock: Callable[[], float] = time.time) -> None:
        if not secrets or any(len(s) < MIN_SECRET for s in secrets):
            raise VerpError(f"a VERP secret needs at least {MIN_SECRET} octets")
        self.secrets = tuple(secrets)
        self.prefix = check_prefix(prefix)
        self.clock = clock

    def today(self) -> int:
        return utc_day(self.clock())

    def age_days(self, target: VerpTarget) -> int:
        """How many days ago the token naming `target` was issued (negative: in the future,
        which only a clock set back can produce)."""
        return self.today() - target.day

    def token(self, queue_id: str, recipient_id: int, day: int | None = None) -> str | None:
        """The 48-character token issued on `day` (default today), or None when `queue_id` is
        not one of new_queue_id's (such a message keeps its own sender) or the recipient id or
        the day does not fit its field."""
        number = queue_id_number(queue_id)
        day = self.today() if day is None else day
        if (number is None or not 0 <= recipient_id < 2 ** (8 * _RCPT_OCTETS)
                or not 0 <= day < 2 ** (8 * _DAY_OCTETS)):
            return None
        payload = (number.to_bytes(QUEUE_ID_OCTETS, "big")
                   + recipient_id.to_bytes(_RCPT_OCTETS, "big") + day.to_bytes(_DAY_OCTETS, "big"))
        raw = payload + _tag(self.secrets[0], payload)
        return base64.b32encode(raw).decode("ascii").lower()

    def encode(self, queue_id: str, recipient_id: int, bounce_domain: str, *,
               day: int | None = None) -> str | None:
        """`<prefix>+<token>@<bounce_domain>`, or None (see `token`)."""
        token = self.token(queue_id, recipient_id, day)
        if token is None:
            return None
        return f"{self.prefix}{SEPARATOR}{token}@{bounce_domain.lower()}"

    def is_candidate(self, address: str) -> bool:
        """Whether `address` has our prefix and a token's shape: such an address is ours to
        accept or refuse, whatever mailbox might otherwise match it."""
        return self._split(address) is not None

    def decode(self, address: str) -> VerpTarget | None:
        """The message and recipient a VERP address names; None when it is not one of ours or
        its tag does not verify (forged, altered, or signed with a secret we no longer hold)."""
        token = self._split(address)
        if token is None:
            return None
        try:
            raw = base64.b32decode(token.upper())
        except ValueError:
            return None
        payload, tag = raw[:-_TAG_OCTETS], raw[-_TAG_OCTETS:]
        if not any(hmac.compare_digest(tag, _tag(s, payload)) for s in self.secrets):
            return None
        queue_id = queue_id_of_number(int.from_bytes(payload[:QUEUE_ID_OCTETS], "big"))
        rcpt_end = QUEUE_ID_OCTETS + _RCPT_OCTETS
        recipient_id = RecipientId(int.from_bytes(payload[QUEUE_ID_OCTETS:rcpt_end], "big"))
        return VerpTarget(queue_id, recipient_id, int.from_bytes(payload[rcpt_end:], "big"))

    def _split(self, address: str) -> str | None:
        local, at, _domain = address.strip().strip("<>").rpartition("@")
        if not at:
            return None
        prefix, sep, token = local.lower().rpartition(SEPARATOR)
        if not sep or prefix != self.prefix or len(token) != TOKEN_LENGTH:
            return None
        return token


__all__ = [
    "MAX_PREFIX",
    "TOKEN_LENGTH",
    "VerpCodec",
    "VerpError",
    "VerpTarget",
    "check_prefix",
    "utc_day",
]
