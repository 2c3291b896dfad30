"""What the IMAP server advertises (RFC 3501 7.2.1, RFC 9051 7.2.2), which depends on the
session's state and on TLS: before login only what a client needs to log in, after it the
extensions. Both IMAP4rev1 and IMAP4rev2 are listed, because Python's imaplib (and other rev1
clients) refuse a server that offers only rev2; RFC 9051 appendix E allows offering both."""

from __future__ import annotations

from dataclasses import dataclass

# Every extension the authenticated state offers, each implemented by the session:
_AFTER_LOGIN = (
    "IMAP4rev1", "IMAP4rev2",
    "ID",  # RFC 2971
    "ENABLE",  # RFC 5161
    "IDLE",  # RFC 2177
    "NAMESPACE",  # RFC 2342
    "UIDPLUS",  # RFC 4315
    "MOVE",  # RFC 6851
    "UNSELECT",  # RFC 3691
    "CHILDREN",  # RFC 3348
    "LIST-EXTENDED",  # RFC 5258
    "LIST-STATUS",  # RFC 5819
    "SPECIAL-USE",  # RFC 6154
    "CREATE-SPECIAL-USE",  # RFC 6154 3
    "CONDSTORE",  # RFC 7162
    "ESEARCH",  # RFC 4731
    "STATUS=SIZE",  # RFC 8438
    "BINARY",  # RFC 3516
    "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",  # RFC 9208
)


@dataclass(frozen=True, slots=True)
class CapabilityPolicy:
    """The listener-level facts the lists depend on."""

    starttls_offered: bool  # a STARTTLS listener with a certificate
    plaintext_login: bool  # login without TLS allowed (loopback listener, configured)
    literal_plus: bool  # RFC 7888: LITERAL+ (else LITERAL-, RFC 9051 requires one of them)
    append_limit: int  # RFC 7889 APPENDLIMIT: the largest message APPEND accepts

    def login_allowed(self, tls: bool) -> bool:
        """RFC 9051 6.2.3 / RFC 8314: no password commands in the clear, except where the
        operator allowed it for a loopback listener."""
        return tls or self.plaintext_login

    def capabilities(self, *, authenticated: bool, tls: bool) -> tuple[str, ...]:
        literal = "LITERAL+" if self.literal_plus else "LITERAL-"
        if authenticated:
            return (*_AFTER_LOGIN, literal, f"APPENDLIMIT={self.append_limit}")
        caps = ["IMAP4rev1", "IMAP4rev2", "SASL-IR", literal, "ID", "ENABLE", "IDLE"]
        if self.starttls_offered and not tls:
            caps.append("STARTTLS")
        if self.login_allowed(tls):
            caps.append("AUTH=PLAIN")
        else:
            # RFC 3501 6.2.3 / RFC 9051 6.2.3: LOGIN refused; no plaintext AUTH= mechanism offered.
            caps.append("LOGINDISABLED")
        return tuple(caps)
