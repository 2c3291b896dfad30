"""Server side of the SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) exchanges.

Protocol-neutral: challenges come back as base64 text and the caller frames them ("334 " in SMTP,
RFC 4954 4; "+ " in IMAP; "+ " in POP3). Theory of operation: PLAIN takes one response (the
initial response, or the answer to an empty challenge) holding authzid NUL authcid NUL password;
LOGIN asks for the user name, then the password, one response each. A response of "*" cancels.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailprime.proto import ProtocolError

MECHANISMS = ("PLAIN", "LOGIN")
_USERNAME_PROMPT = base64.b64encode(b"Username:").decode("ascii")
_PASSWORD_PROMPT = base64.b64encode(b"Password:").decode("ascii")


def offered_mechanisms(configured: Iterable[str]) -> tuple[str, ...]:
    """The configured mechanisms this module implements, upper-cased, in the configured order."""
    return tuple(m.upper() for m in configured if m.upper() in MECHANISMS)


class SaslFailure(enum.Enum):
    CANCELLED = "Authentication cancelled"
    BAD_BASE64 = "Invalid base64 data"
    MALFORMED = "Malformed authentication response"


class SaslError(ProtocolError):
    def __init__(self, failure: SaslFailure) -> None:
        super().__init__(failure.value)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Credentials:
    mechanism: str
    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this base64 text to the client and feed its answer to `SaslServer.respond`."""

    text: str


class _Step(enum.Enum):
    PLAIN = "plain"
    LOGIN_USER = "login_user"
    LOGIN_SECRET = "login_secret"  # noqa: S105 (a step name, not a secret)


class SaslServer:
    """One exchange. `start` then `respond` until Credentials come back; SaslError ends it."""

    def __init__(self, mechanism: str) -> None:
        mechanism = mechanism.upper()
        if mechanism not in MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._step = _Step.PLAIN if mechanism == "PLAIN" else _Step.LOGIN_USER
        self._user = ""

    def start(self, initial: str | None) -> Challenge | Credentials:
        """`initial` is the initial response as sent ("=" is the empty response), or None."""
        if initial is None:
            return Challenge("" if self._step is _Step.PLAIN else _USERNAME_PROMPT)
        if initial == "=":  # RFC 4954 4
            return self._feed(b"")
        return self.respond(initial)

    def respond(self, line: str) -> Challenge | Credentials:
        if line == "*":
            raise SaslError(SaslFailure.CANCELLED)
        try:
            data = base64.b64decode(line.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise SaslError(SaslFailure.BAD_BASE64) from None
        return self._feed(data)

    def _feed(self, data: bytes) -> Challenge | Credentials:
        try:
            if self._step is _Step.PLAIN:
                # RFC 4616 2: [authzid] NUL authcid NUL passwd, UTF-8, the last two non-empty.
                parts = data.split(b"\0")
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise SaslError(SaslFailure.MALFORMED)
                authzid, authcid, password = (p.decode("utf-8") for p in parts)
                return Credentials("PLAIN", authzid, authcid, password)
            if self._step is _Step.LOGIN_USER:
                self._user = data.decode("utf-8")
                self._step = _Step.LOGIN_SECRET
                return Challenge(_PASSWORD_PROMPT)
            return Credentials("LOGIN", "", self._user, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise SaslError(SaslFailure.MALFORMED) from None
