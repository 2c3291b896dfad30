"""The IMAP service: satisfies `net.imap_handler.ImapHandler` (without importing net) by making one
`ImapSession` per connection, all sharing the storage, the message content cache, the
per-account session registry and the login cache."""

from __future__ import annotations

from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.imap.auth import AccountSessions
from mailprime.services.imap.capabilities import CapabilityPolicy
from mailprime.services.imap.content import MessageContentCache
from mailprime.services.imap.context import ImapConfig, ImapStore, Resources
from mailprime.services.imap.session import ImapSession
from mailprime.services.mail_auth import LoginCache
from mailprime.storage.ports import DirectoryStore


class ImapService:
    def __init__(self, store: ImapStore, config: ImapConfig, *, cache: MessageContentCache,
                 directory: DirectoryStore | None = None,
                 sessions: AccountSessions | None = None, logins: LoginCache | None = None) -> None:
        self.resources = Resources(
            store=store,
            directory=directory if directory is not None else store,
            cache=cache,
            config=config,
            sessions=sessions or AccountSessions(config.max_sessions_per_account),
            logins=logins if logins is not None else LoginCache(),
        )

    def new_session(self, peer: PeerInfo, tls: bool, *, starttls: bool, plaintext_login: bool,
                    literal_plus: bool) -> ImapSession:
        policy = CapabilityPolicy(starttls_offered=starttls, plaintext_login=plaintext_login,
                                  literal_plus=literal_plus, append_limit=self.resources.config.max_append)
        return ImapSession(self.resources, policy, peer, tls)
