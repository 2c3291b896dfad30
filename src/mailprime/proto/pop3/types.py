"""Values of the POP3 server core: replies, the maildrop listing, the core's settings, and the
sink a session streams message content into."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

# RFC 2449 8: the response codes this server sends (RFC 3206 adds SYS/TEMP, SYS/PERM and AUTH).
RESPONSE_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH"})


@dataclass(frozen=True, slots=True)
class Reply:
    """A POP3 status line: "+OK text" or "-ERR [CODE] text" (RFC 1939 3, RFC 2449 8)."""

    ok: bool
    text: str = ""
    code: str | None = None  # an RFC 2449 8 response code, negative replies only

    @classmethod
    def positive(cls, text: str = "") -> Reply:
        return cls(True, text)

    @classmethod
    def negative(cls, text: str, code: str | None = None) -> Reply:
        return cls(False, text, code)

    def to_bytes(self) -> bytes:
        # A reply is one line: CR and LF in the text (say, from an exception message) would
        # let it forge a second response.
        text = " ".join(self.text.split())
        status = "+OK" if self.ok else "-ERR"
        code = f"[{self.code}]" if self.code and not self.ok else ""
        return (" ".join(p for p in (status, code, text) if p) + "\r\n").encode("utf-8")


class MessageInfo(NamedTuple):
    """One message of the maildrop as the session snapshot it at login. A named tuple rather
    than the usual frozen dataclass: a login makes one per message (thousands), a tuple is made
    at a third of the cost, and the garbage collector stops tracking a tuple of an int and a
    str, so a big maildrop held for a session is never traversed again."""

    size: int  # octets, as LIST and STAT report them (RFC 1939 5)
    uidl: str  # RFC 1939 7: 1 to 70 characters in 0x21..0x7E, never reused for another message


def valid_uidl(uidl: str) -> bool:
    # 0x21..0x7E: the printable ASCII characters but the space (checked for a whole maildrop
    # at every login, hence no per-character loop).
    return 1 <= len(uidl) <= 70 and uidl.isascii() and uidl.isprintable() and " " not in uidl


@dataclass(frozen=True, slots=True)
class LoginAccepted:
    """The answer to a successful `Authenticate`: the maildrop, numbered 1..n for the session."""

    maildrop: tuple[MessageInfo, ...]


class ContentFollows(enum.Enum):
    CONTENT_FOLLOWS = "CONTENT_FOLLOWS"


CONTENT_FOLLOWS: Final = ContentFollows.CONTENT_FOLLOWS
"""The answer to `Retrieve` that starts the multi-line content (see `ServerConnection`)."""

Answer = Reply | LoginAccepted | ContentFollows


@dataclass(frozen=True, slots=True)
class Pop3Capabilities:
    """What CAPA advertises, besides what the core always implements."""

    hostname: str
    stls: bool = False  # offered before TLS only (RFC 2595 4)
    sasl_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    implementation: str = "mailprime"


@dataclass(frozen=True, slots=True)
class Pop3Limits:
    """Input limits of the POP3 server core, each with the RFC section that sets or allows it."""

    # RFC 2449 4: a command is at most 255 octets including the CRLF.
    max_line: int = 255
    # RFC 5034 4: an initial response must fit in those 255 octets; longer responses go in the
    # continuation, which we bound like SMTP's (RFC 4954 4: 12288 octets).
    max_sasl_line: int = 12288
    max_unknown_commands: int = 10  # then "-ERR" and close (anti-flood)
    max_auth_failures: int = 3  # then close (RFC 1939 13 suggests limiting attempts)


class ContentSink(Protocol):
    """Where a session streams a message for RETR or TOP (the driver implements it)."""

    async def write(self, chunk: bytes) -> bool:
        """Sends the next piece of the stored message. Returns False once the client needs no
        more (TOP's lines are out): the session then stops reading."""
        ...

    async def write_encoded(self, body: Sequence[bytes | memoryview]) -> None:
        """RETR only, instead of any `write`: the whole message, encoded ahead of the command
        by `multiline.encode_whole` or `encode_known` (terminator included), as pieces to be
        written back to back."""
        ...
