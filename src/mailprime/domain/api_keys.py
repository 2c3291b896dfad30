"""HTTP API keys: what a key is, how it is written, and what its scopes allow.

Theory of operation. A key is shown once, at creation, as `mp_<prefix>_<secret>`: the prefix
(12 hex digits) names the row and may be logged or shown in listings; the secret (256 random
bits, URL-safe base64) is never stored, only its SHA-256. Checking a key is then one indexed
look-up by prefix and one constant-time comparison of hashes.

Why SHA-256 and not Argon2 (which the account passwords use): a slow hash protects secrets a
person chose, of which an attacker with the database can try the likely ones. A 256-bit random
secret has no likely ones: 2**256 tries is out of reach at any hash speed, so a slow hash adds
nothing, while it would cost tens of milliseconds and megabytes of memory on every API request,
a lever for anyone who can send requests with made-up keys.

Scopes are `resource:action` strings; `resource:*` grants every action on the resource and `*`
everything (an administrator's key). The resources are fixed here, so a typo in
`mailprime apikey create --scope` is refused rather than creating a key that can do nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mailprime.domain.ids import ApiKeyId

KEY_PREFIX = "mp"
PREFIX_HEX = 12  # 48 bits: unique enough to find the row; uniqueness is enforced by the store
SECRET_OCTETS = 32  # 256 bits
MAX_KEY_LENGTH = 128  # a key in a header longer than this is not one of ours
MAX_NAME = 64

ADMIN_SCOPE = "*"
# resource -> its actions; "resource:*" grants all of them.
RESOURCES: dict[str, tuple[str, ...]] = {
    "contacts": ("read", "write"),
    "lists": ("read", "write"),
    "segments": ("read", "write"),
    "templates": ("read", "write"),
    "campaigns": ("read", "write", "send"),
    "messages": ("send", "read"),
    "suppressions": ("read", "write"),
    "webhooks": ("read", "write"),
    "events": ("read",),
}

_KEY = re.compile(r"mp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ApiKeyFormatError(ValueError):
    """A scope or a key name that is not allowed (the text says which and why)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's row: never its secret, only the secret's SHA-256 (hex)."""

    id: ApiKeyId
    name: str
    prefix: str
    secret_hash: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly made key: `text` is shown to the operator once and then forgotten."""

    text: str
    prefix: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_api_key() -> NewApiKey:
    prefix = secrets.token_hex(PREFIX_HEX // 2)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_OCTETS)).decode("ascii").rstrip("=")
    return NewApiKey(f"{KEY_PREFIX}_{prefix}_{secret}", prefix, hash_secret(secret))


def parse_api_key(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a key's text, or None when it does not have a key's shape."""
    if len(text) > MAX_KEY_LENGTH:
        return None
    m = _KEY.fullmatch(text)
    return (m.group(1), m.group(2)) if m else None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ApiKeyFormatError(f"key name {name!r}: 1 to {MAX_NAME} letters, digits, '.', '_' "
                                "or '-', starting with a letter or digit")
    return name


def check_scope(scope: str) -> str:
    """The scope if it is `*`, `resource:*` or `resource:action` with a known pair."""
    if scope == ADMIN_SCOPE:
        return scope
    resource, sep, action = scope.partition(":")
    actions = RESOURCES.get(resource)
    if not sep or actions is None:
        raise ApiKeyFormatError(f"scope {scope!r}: not one of {', '.join(sorted(RESOURCES))} "
                                "followed by ':action' or ':*', nor '*'")
    if action != "*" and action not in actions:
        raise ApiKeyFormatError(f"scope {scope!r}: {resource} has the actions "
                                f"{', '.join(actions)} (or '*')")
    return scope


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    checked = frozenset(check_scope(s.strip()) for s in scopes if s.strip())
    if not checked:
        raise ApiKeyFormatError("a key needs at least one scope (e.g. suppressions:read, or '*')")
    return checked


def grants(scopes: frozenset[str], needed: str) -> bool:
    """Whether a key with `scopes` may do `needed` ("resource:action")."""
    resource = needed.partition(":")[0]
    return bool({ADMIN_SCOPE, f"{resource}:*", needed} & scopes)


__all__ = [
    "ADMIN_SCOPE",
    "RESOURCES",
    "ApiKey",
    "ApiKeyFormatError",
    "NewApiKey",
    "check_name",
    "check_scope",
    "check_scopes",
    "grants",
    "hash_secret",
    "new_api_key",
    "parse_api_key",
]
