"""Password hashing for accounts: Argon2id (argon2-cffi), with rehash-on-login when parameters change."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# Moderate cost: SMTP AUTH happens per connection; RFC 9106's second recommended option
# (m=64 MiB, t=3) is too slow for a busy submission port on 2 cores, so we use m=19 MiB, t=2,
# which OWASP lists as an equivalent-strength Argon2id configuration.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def generate_password(length: int = 20) -> str:
    """A random password from an alphabet without look-alike characters."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))
