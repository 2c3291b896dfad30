"""Reading SMTP replies: line framing with limits, multi-line assembly, enhanced status codes
(RFC 2034 / RFC 3463) and the EHLO capability list (RFC 5321 4.1.1.1, 4.2).

Pure functions and one incremental reader; no I/O. The client core (`client.py`) uses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.proto import RemoteProtocolError
from mailprime.proto.smtp.types import Reply


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """Input limits on what a server may send us, each with the RFC section that motivates it."""

    # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including the code and CRLF.
    # Real servers overrun it (long EHLO AUTH lists, verbose 5xx texts), so we allow four times as
    # much before calling it an attack rather than sloppiness.
    max_line: int = 4 * 512
    # RFC 5321 4.2.1 puts no bound on the number of lines of a multi-line reply; an EHLO reply
    # with a hundred keywords is already absurd, so more than this is treated as a flood.
    max_lines: int = 100


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a server offered in its EHLO reply (all False after a HELO: plain RFC 821 SMTP)."""

    esmtp: bool = False
    pipelining: bool = False  # RFC 2920
    size: bool = False  # RFC 1870 SIZE offered at all
    max_size: int | None = None  # SIZE's fixed maximum; None when none was declared (or "SIZE 0")
    eightbitmime: bool = False  # RFC 6152
    binarymime: bool = False  # RFC 3030
    smtputf8: bool = False  # RFC 6531
    starttls: bool = False  # RFC 3207
    chunking: bool = False  # RFC 3030
    dsn: bool = False  # RFC 3461
    enhancedstatuscodes: bool = False  # RFC 2034
    auth_mechanisms: tuple[str, ...] = ()  # RFC 4954, upper-cased, in the server's order
    keywords: tuple[str, ...] = ()  # every keyword offered, upper-cased, for anything else

    def offers(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords


# RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                            Reply-code [ SP textstring ] CRLF
# Reply-code = %x32-35 %x30-35 %x30-39. We accept any second digit: some servers use 2x9 codes,
# and refusing them would only cost deliverability.
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)
# RFC 3463 2: status-code = class "." subject "." detail; class is 2, 4 or 5; subject and detail
# are 1 to 3 digits.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")
# RFC 5321 4.1.1.1: ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True, slots=True)
class RawReply:
    """One complete reply as framed on the wire: the code and each line's text, undecorated."""

    code: int
    texts: tuple[str, ...]


class ReplyReader:
    """Incremental reply framer. Feed bytes with `feed`, pull complete replies with `next_reply`.

    Theory of operation: bytes accumulate in a buffer; `next_reply` cuts complete lines off the
    front (LF-terminated, a preceding CR is dropped so that bare-LF servers still work) and
    collects them into the reply in progress until a line whose separator is not "-" ends it.
    The reply in progress survives across calls, so chunk boundaries never change the result.
    A line (complete or partial) longer than `max_line`, a reply with more than `max_lines`
    lines, a line that is not "ddd", "ddd text" or "ddd-text", or a continuation with a
    different code raises RemoteProtocolError; after that the reader is unusable.
    """

    def __init__(self, limits: ReplyLimits | None = None) -> None:
        self._limits = limits or ReplyLimits()
        self._buffer = bytearray()
        self._scan_from = 0  # no LF before this offset of the buffer: don't search it again
        self._code: int | None = None
        self._texts: list[str] = []

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a complete reply (partial lines included)."""
        return len(self._buffer)

    @property
    def in_reply(self) -> bool:
        """True when a multi-line reply has started but its last line has not arrived."""
        return self._code is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_reply(self) -> RawReply | None:
        """The next complete reply, or None when more bytes are needed."""
        # Bounded: every iteration consumes one line from a finite buffer or returns.
        while True:
            line = self._next_line()
            if line is None:
                return None
            match = _REPLY_LINE.fullmatch(line)
            if match is None:
                raise RemoteProtocolError(f"malformed reply line {_show(line)}")
            code = int(match.group(1))
            if self._code is not None and code != self._code:
                raise RemoteProtocolError(
                    f"reply code changed within a multi-line reply ({self._code} then {code})"
                )
            self._code = code
            self._texts.append((match.group(3) or b"").decode("utf-8", errors="replace"))
            if len(self._texts) > self._limits.max_lines:
                raise RemoteProtocolError(
                    f"reply longer than {self._limits.max_lines} lines (RFC 5321 4.2.1 flood guard)"
                )
            if match.group(2) != b"-":
                reply = RawReply(code, tuple(self._texts))
                self._code, self._texts = None, []
                return reply

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            if len(self._buffer) > self._limits.max_line:
                raise RemoteProtocolError(
                    f"reply line longer than {self._limits.max_line} octets (RFC 5321 4.5.3.1.5)"
                )
            return None
        if end + 1 > self._limits.max_line:
            raise RemoteProtocolError(
                f"reply line longer than {self._limits.max_line} octets (RFC 5321 4.5.3.1.5)"
            )
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        return line[:-1] if line.endswith(b"\r") else line


def _show(line: bytes) -> str:
    """A short printable rendering of a bad line for an error message."""
    text = line[:60].decode("ascii", errors="backslashreplace")
    return repr(text + ("..." if len(line) > 60 else ""))


def build_reply(raw: RawReply, *, enhanced_codes: bool) -> Reply:
    """Turns a framed reply into a `Reply`.

    With `enhanced_codes` (the server advertised ENHANCEDSTATUSCODES), a status code at the start
    of the first line is split off into `Reply.enhanced` when its class matches the reply code's
    first digit (RFC 2034 4); the same code repeated on continuation lines is removed too, so that
    `Reply.to_bytes` reproduces a well-formed reply.
    """
    texts = list(raw.texts)
    enhanced: str | None = None
    if enhanced_codes:
        match = _ENHANCED.match(texts[0])
        if match and match.group(1) == str(raw.code)[0]:
            enhanced = ".".join(match.group(1, 2, 3))
            texts[0] = texts[0][match.end() :]
            for i in range(1, len(texts)):
                again = _ENHANCED.match(texts[i])
                if again and ".".join(again.group(1, 2, 3)) == enhanced:
                    texts[i] = texts[i][again.end() :]
    return Reply(raw.code, texts[0], enhanced, tuple(texts[1:]))


def parse_ehlo(reply: Reply) -> Capabilities:
    """The capabilities in a positive EHLO reply (RFC 5321 4.1.1.1: the first line is the server's
    name and greeting, each further line one keyword with optional parameters).

    Lines that are not keywords are ignored rather than fatal: an odd EHLO line must not make a
    destination undeliverable.
    """
    keywords: list[str] = []
    params: dict[str, Sequence[str]] = {}
    for line in reply.lines:
        words = line.split()
        if not words:
            continue
        head = words[0]
        # RFC 4954 predecessors advertised "AUTH=LOGIN PLAIN"; treat it as AUTH.
        if head.upper().startswith("AUTH="):
            head, words = "AUTH", ["AUTH", head[5:], *words[1:]]
        if not _KEYWORD.fullmatch(head):
            continue
        key = head.upper()
        if key not in params:
            keywords.append(key)
            params[key] = words[1:]
        elif key == "AUTH":
            params[key] = [*params[key], *words[1:]]
    mechanisms: list[str] = []
    for mech in params.get("AUTH", ()):
        if mech and mech.upper() not in mechanisms:
            mechanisms.append(mech.upper())
    size_params = params.get("SIZE", ())
    max_size: int | None = None
    if size_params and size_params[0].isdigit() and len(size_params[0]) <= 20:
        # RFC 1870 4: "SIZE 0" (or no parameter) means no fixed maximum.
        max_size = int(size_params[0]) or None
    return Capabilities(
        esmtp=True,
        pipelining="PIPELINING" in params,
        size="SIZE" in params,
        max_size=max_size,
        eightbitmime="8BITMIME" in params,
        binarymime="BINARYMIME" in params,
        smtputf8="SMTPUTF8" in params,
        starttls="STARTTLS" in params,
        chunking="CHUNKING" in params,
        dsn="DSN" in params,
        enhancedstatuscodes="ENHANCEDSTATUSCODES" in params,
        auth_mechanisms=tuple(mechanisms),
        keywords=tuple(keywords),
    )
