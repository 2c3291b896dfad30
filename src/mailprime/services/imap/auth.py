"""Logging in to IMAP: SASL PLAIN decoding and the cap on sessions
per account (RFC 9051 6.2.2-6.2.3, RFC 5530 AUTHENTICATIONFAILED / LIMIT response codes). The
password check itself is `services.mail_auth.check_login`, shared with POP3."""

from __future__ import annotations

import base64
from collections import Counter

from mailprime.domain.ids import AccountId
from mailprime.proto import ProtocolError
from mailprime.proto.smtp.sasl import Credentials, SaslServer


def plain_credentials(response: bytes) -> Credentials | None:
    """RFC 4616 PLAIN: authzid NUL authcid NUL password; None when malformed (whether the
    authzid may be used is `mail_auth.check_login`'s decision)."""
    sasl = SaslServer("PLAIN")
    try:
        credentials = sasl.start(base64.b64encode(response).decode("ascii") if response else "=")
    except ProtocolError:
        return None
    return credentials if isinstance(credentials, Credentials) else None


class AccountSessions:
    """Authenticated sessions per account in this process, bounded (NO [LIMIT], RFC 5530).

    Per process: with several worker processes each keeps its own count, so the bound is per
    worker; it protects a process from one account opening sessions without end."""

    def __init__(self, max_per_account: int) -> None:
        self.max_per_account = max_per_account
        self._open: Counter[AccountId] = Counter()

    def acquire(self, account_id: AccountId) -> bool:
        if self.max_per_account and self._open[account_id] >= self.max_per_account:
            return False
        self._open[account_id] += 1
        return True

    def release(self, account_id: AccountId) -> None:
        self._open[account_id] -= 1
        if self._open[account_id] <= 0:
            del self._open[account_id]

    def count(self, account_id: AccountId) -> int:
        return self._open[account_id]
