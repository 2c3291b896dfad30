"""DKIM signing keys as the key store keeps them (RFC 6376; Ed25519 keys per RFC 8463).

A key's life, for selector rotation without downtime: generated and published (its TXT record
in DNS, not yet signing), then active (the one key of its domain and type that signs), then,
once a newer key of the same type was activated, published but idle so that mail signed with
it in the last days still verifies, and finally retired (its record may be removed from DNS).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class DkimKeyType(enum.StrEnum):
    """The k= tag of the key record (RFC 6376 3.6.1, RFC 8463 4)."""

    RSA = "rsa"
    ED25519 = "ed25519"


class DkimKeyState(enum.StrEnum):
    ACTIVE = "active"  # signs outgoing mail
    PUBLISHED = "published"  # in DNS, not signing: before activation or after replacement
    RETIRED = "retired"  # no longer published


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str  # lower-case A-labels
    selector: str
    key_type: DkimKeyType
    private_key: str = field(repr=False)  # PKCS#8 PEM; kept out of reprs and logs
    created_at: datetime
    active: bool = False
    retired_at: datetime | None = None

    @property
    def state(self) -> DkimKeyState:
        if self.retired_at is not None:
            return DkimKeyState.RETIRED
        return DkimKeyState.ACTIVE if self.active else DkimKeyState.PUBLISHED
