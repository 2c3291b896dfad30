"""An HMAC-SHA256 keyed and fed a label once, for the signers that tag many short payloads
under one key (marketing.tokens, message.msgid_token): each tag copies it and adds the payload,
so the key's pads and the label are not hashed again — about half the cost of a fresh HMAC,
and cheaper than a one-shot hmac.digest, which keys it again each time (measured). The copy is
of the OpenSSL object under hmac.HMAC where there is one: HMAC.copy() is Python code around
that copy, a third of the cost."""

from __future__ import annotations

import hmac
from typing import Protocol


class Mac(Protocol):
    """hmac.HMAC, or the OpenSSL HMAC object inside it: what a signer uses of either."""

    def copy(self) -> Mac: ...

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


def keyed(secret: bytes, label: bytes) -> Mac:
    """HMAC-SHA256 under `secret`, fed `label`: copy it, update with the payload, digest."""
    mac = hmac.new(secret, label, "sha256")
    inner: Mac | None = getattr(mac, "_hmac", None)
    return inner or mac


def fresh_tag(secret: bytes, label: bytes, payload: bytes, octets: int) -> bytes:
    """The first `octets` of HMAC-SHA256(secret, label + payload), made fresh: for checking a
    tag under each of several secrets, where no keyed copy is kept."""
    return hmac.new(secret, label + payload, "sha256").digest()[:octets]


__all__ = ["Mac", "fresh_tag", "keyed"]
