"""What every IMAP command handler works with: the shared resources of the service (storage,
content and mailbox caches, configuration, the per-account session registry, the login cache)
and the state of one session (who is logged in, the selected mailbox's view, the extensions it
enabled)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from mailprime.domain.login_failures import FailurePolicy
from mailprime.domain.mail import Account
from mailprime.proto.imap.types import Response, ResponseCode, Tagged, bad, no
from mailprime.services.imap.auth import AccountSessions
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.mailbox_cache import MailboxCache
from mailprime.services.imap.quota import QuotaLimits
from mailprime.services.imap.view import MailboxView, SyncOptions
from mailprime.services.mail_auth import LoginCache
from mailprime.storage.ports import DirectoryStore, MailboxStore, MailStore

Responses = AsyncIterator[Response]
"""What a command handler produces: untagged data, then exactly one Tagged response last."""


class ImapStore(MailboxStore, MailStore, DirectoryStore, Protocol):
    """The storage ports IMAP uses (runtime passes the one `Store`)."""


@dataclass(frozen=True, slots=True)
class ImapConfig:
    hostname: str
    # RFC 7889 APPENDLIMIT / RFC 9051 7.1 TOOBIG: the message size limit of the server.
    max_append: int = 50 * 1024 * 1024
    quota: QuotaLimits = field(default_factory=QuotaLimits)
    # RFC 5530 LIMIT: authenticated sessions per account (per process); 0: no cap.
    max_sessions_per_account: int = 20
    failures: FailurePolicy = field(default_factory=FailurePolicy)
    # While IDLE, changes made in this process wake the session at once; those of other
    # processes are seen by polling the mailbox this often (seconds).
    idle_poll: float = 1.5


@dataclass(slots=True)
class Resources:
    """Shared by every session of one service (one listener or several)."""

    store: ImapStore
    directory: DirectoryStore  # cached look-ups (runtime passes a CachedDirectory)
    cache: MessageContentCache
    config: ImapConfig
    sessions: AccountSessions
    logins: LoginCache  # recent good passwords (mail_auth); runtime may share one with POP3
    mailboxes: MailboxCache = field(default_factory=MailboxCache)  # message lists for SELECT


class CommandFailed(Exception):
    """A handler's way to end a command with a tagged NO/BAD from deep inside."""

    def __init__(self, text: str, code: str | None = None, *, bad: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.bad = bad

    def response(self, tag: str) -> Tagged:
        code = ResponseCode(self.code) if self.code else None
        if self.bad:
            return bad(tag, self.text, code)
        return no(tag, self.text, code)


@dataclass(slots=True)
class SessionContext:
    res: Resources
    account: Account | None = None
    view: MailboxView | None = None
    condstore: bool = False  # RFC 7162 3.1: enabled by ENABLE or a CONDSTORE-using command
    rev2: bool = False  # ENABLE IMAP4rev2 (RFC 9051 6.3.1)
    utf8: bool = False  # UTF-8 names (IMAP4rev2 or UTF8=ACCEPT enabled)

    @property
    def store(self) -> ImapStore:
        return self.res.store

    @property
    def config(self) -> ImapConfig:
        return self.res.config

    def require_account(self) -> Account:
        if self.account is None:  # the core lets only authenticated commands through
            raise CommandFailed("Not authenticated", bad=True)
        return self.account

    def require_view(self) -> MailboxView:
        if self.view is None:  # the core lets only selected-state commands through
            raise CommandFailed("No mailbox selected", bad=True)
        return self.view

    def sync_options(self, *, allow_expunge: bool) -> SyncOptions:
        return SyncOptions(allow_expunge=allow_expunge, condstore=self.condstore, rev1=not self.rev2)
