"""Checking a mail client's login (POP3 now, IMAP next): account look-up, Argon2 verification off
the event loop, disabled accounts refused, and the SASL authorization identity limited to the
account itself (no proxy logins).

An unknown user costs the same Argon2 verification as a known one (against a hash of a random
password made once), so the response time does not tell which addresses exist.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from dataclasses import dataclass

from mailprime.domain.mail import Account
from mailprime.services.passwords import hash_password, verify_password
from mailprime.storage.ports import DirectoryStore


class LoginFailure(enum.StrEnum):
    """Why a login was refused: for the log only, never for the client (RFC 3206 [AUTH])."""

    UNKNOWN_USER = "unknown user"
    BAD_PASSWORD = "password mismatch"  # noqa: S105 (a log reason, not a secret)
    DISABLED = "account disabled"
    AUTHZID = "authorization identity differs"


@dataclass(frozen=True, slots=True)
class LoginCheck:
    account: Account | None  # set when the login is good
    failure: LoginFailure | None = None

    @property
    def ok(self) -> bool:
        return self.account is not None


_decoy: str | None = None


async def _decoy_hash() -> str:
    global _decoy  # noqa: PLW0603 (made once per process, on the first unknown user)
    if _decoy is None:
        _decoy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(16))
    return _decoy


async def check_login(directory: DirectoryStore, authzid: str, authcid: str, password: str) -> LoginCheck:
    """Verifies `authcid`'s password; `authzid` must be empty or the same identity."""
    account = await directory.get_account(authcid.strip())
    stored = account.password_hash if account is not None else await _decoy_hash()
    matches = await asyncio.to_thread(verify_password, stored, password)
    if account is None:
        return LoginCheck(None, LoginFailure.UNKNOWN_USER)
    if not matches:
        return LoginCheck(None, LoginFailure.BAD_PASSWORD)
    if account.disabled:
        return LoginCheck(None, LoginFailure.DISABLED)
    if authzid and authzid.lower() not in (authcid.lower(), account.address.lower()):
        return LoginCheck(None, LoginFailure.AUTHZID)
    return LoginCheck(account)
