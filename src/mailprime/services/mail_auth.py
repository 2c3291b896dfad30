"""Checking a mail client's login, for IMAP and POP3 alike: account look-up, Argon2 verification
off the event loop, disabled accounts refused, and the SASL authorization identity limited to
the account itself (no proxy logins). `check_login` is the one place where their passwords are
checked; it returns why a login failed, for the log.

An unknown user costs the same Argon2 verification as a known one (against a hash of a random
password made once), so the response time does not tell which addresses exist.

`LoginCache` spares the Argon2 verification (tens of milliseconds of CPU, by design) when a
client logs in again with the password it used moments ago, which mail clients do all the time
(a connection per folder, reconnects after every sleep); see its docstring.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
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


class LoginCache:
    """Recent successful password verifications, as Dovecot's auth_cache keeps them.

    What is kept: for each (account address, password) that verified, an HMAC-SHA256 of the
    pair under a random key made when the cache is (per process, never stored), mapped to the
    account's password hash string at that time and an expiry. Never the password itself.

    When it answers: a login whose pair is in the cache, not expired, and whose account still
    has the same password hash string. A password change (new hash) makes the old entry miss,
    so the new password is verified with Argon2 and the old one is refused at once. Failed
    logins are never cached, and the other checks of `check_login` (account disabled,
    authorization identity) run every time.

    Bounds: `ttl` seconds (default 60: at least one Argon2 verification per account and
    password a minute, and an entry outlives a password change by no time at all) and
    `max_entries` (default 10,000, a few MiB at most); entries leave oldest first, and expired ones
    are dropped whenever the cache is used, so none lingers in memory.
    """

    def __init__(self, *, ttl: float = 60.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # Insertion order is expiry order (one ttl for all): the oldest entry is always first.
        self._entries: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def verified(self, account: Account, password: str) -> bool:
        """Whether `password` verified for `account` within the ttl, under its current hash."""
        self._expire()
        entry = self._entries.get(self._digest(account, password))
        if entry is None or entry[1] != account.password_hash:
            return False
        self.hits += 1
        return True

    def remember(self, account: Account, password: str) -> None:
        """Records a successful Argon2 verification of `password` for `account`."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        digest = self._digest(account, password)
        self._entries.pop(digest, None)  # re-inserted at the end, with a new expiry
        self._entries[digest] = (self._clock() + self.ttl, account.password_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self._expire()

    def _digest(self, account: Account, password: str) -> bytes:
        message = account.address.lower().encode("utf-8") + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, message, hashlib.sha256)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            digest, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[digest]


_decoy: str | None = None


async def _decoy_hash() -> str:
    global _decoy  # noqa: PLW0603 (made once per process, on the first unknown user)
    if _decoy is None:
        _decoy = await asyncio.to_thread(hash_password, secrets.token_urlsafe(16))
    return _decoy


async def check_login(directory: DirectoryStore, authzid: str, authcid: str, password: str, *,
                      cache: LoginCache | None = None) -> LoginCheck:
    """Verifies `authcid`'s password; `authzid` must be empty or the same identity. With a
    `cache`, a password verified moments ago is not verified again (see LoginCache)."""
    account = await directory.get_account(authcid.strip())
    if account is not None and cache is not None and cache.verified(account, password):
        matches = True
    else:
        stored = account.password_hash if account is not None else await _decoy_hash()
        matches = await asyncio.to_thread(verify_password, stored, password)
        if matches and account is not None and cache is not None:
            cache.remember(account, password)
    if account is None:
        return LoginCheck(None, LoginFailure.UNKNOWN_USER)
    if not matches:
        return LoginCheck(None, LoginFailure.BAD_PASSWORD)
    if account.disabled:
        return LoginCheck(None, LoginFailure.DISABLED)
    if authzid and authzid.lower() not in (authcid.lower(), account.address.lower()):
        return LoginCheck(None, LoginFailure.AUTHZID)
    return LoginCheck(account)
