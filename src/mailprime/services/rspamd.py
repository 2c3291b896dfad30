"""Spam scoring by rspamd: one POST to its normal worker's /checkv2 per received message.

Theory of operation. rspamd's HTTP protocol (https://rspamd.com/doc/developers/protocol.html)
takes the raw message as the request body and the SMTP envelope as request headers (IP, Helo,
From, one Rcpt per recipient, Queue-Id, and User for an authenticated sender); it answers a JSON
object with `score`, `required_score`, `action` and the `symbols` that fired. We act on
`action` only, so the thresholds stay in rspamd's own configuration:

  "reject"                      -> 550 5.7.1 to DATA (nothing stored)
  "soft reject"                 -> 451 4.7.1 (rspamd asks the client to come back later)
  "add header", "rewrite subject" -> junk: the local deliveries go to the \\Junk mailbox
  "greylist", "no action"       -> deliver (we do not greylist)

Every verdict becomes an X-Spam-* header block on the stored message and the fields of the log
line. rspamd unreachable, too slow or answering nonsense: `Scan.error` is set and the caller
applies its fail-open (accept and log) or fail-closed (451) setting.

The HTTP request goes through the `HttpPost` port (implemented in net.http_client), so this
module stays free of sockets and is tested against a real rspamd through the real client.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# A /checkv2 answer is a small JSON object; even with every symbol's options it stays well
# under this. A larger one is refused unread (the port enforces the cap).
MAX_REPLY = 1024 * 1024
# Symbol names written into X-Spam-Symbols: enough to see why, short enough for one header.
MAX_SYMBOLS = 30
_SYMBOL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# RFC 5321 4.1.1.4 has no header-injection defences of its own: values we copy into request
# headers must not carry CR/LF or other controls.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


class HttpPost(Protocol):
    """One HTTP/1.1 POST; returns (status, response body). Raises OSError or TimeoutError when
    the server cannot be reached or does not answer in time, ValueError when the answer is not
    HTTP or larger than `max_reply`."""

    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes, *,
                   timeout: float, max_reply: int) -> tuple[int, bytes]: ...


class SpamAction(enum.StrEnum):
    """What we do with a scored message (see the module's table)."""

    DELIVER = "deliver"
    JUNK = "junk"
    SOFT_REJECT = "soft-reject"
    REJECT = "reject"


_ACTIONS = {
    "reject": SpamAction.REJECT,
    "soft reject": SpamAction.SOFT_REJECT,
    "add header": SpamAction.JUNK,
    "rewrite subject": SpamAction.JUNK,
    "greylist": SpamAction.DELIVER,
    "no action": SpamAction.DELIVER,
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP facts rspamd scores with the message."""

    client_ip: str
    helo: str
    mail_from: str
    recipients: tuple[str, ...]
    queue_id: str
    user: str = ""  # the authenticated sender, if any


@dataclass(frozen=True, slots=True)
class Scan:
    """rspamd's verdict, or why there is none (`error`)."""

    action: SpamAction = SpamAction.DELIVER
    rspamd_action: str = ""  # as rspamd spelled it
    score: float = 0.0
    required: float = 0.0
    symbols: tuple[str, ...] = ()
    error: str = ""
    skipped: str = ""  # not scanned on purpose (why); not a failure

    @property
    def header(self) -> bytes:
        """X-Spam-* fields recording the verdict (CRLF-terminated), the form rspamd's own
        milter headers take, so that MUAs' filters recognise them."""
        if self.error or self.skipped:
            result = "error" if self.error else "skipped"
            why = _clean(self.error or self.skipped)[:120]
            return f"X-Spam-Scanner: rspamd; result={result} ({why})\r\n".encode()
        flag = "Yes" if self.action in (SpamAction.JUNK, SpamAction.REJECT) else "No"
        lines = [f"X-Spam-Scanner: rspamd; action={self.rspamd_action.replace(' ', '-')}",
                 f"X-Spam-Flag: {flag}",
                 f"X-Spam-Score: {self.score:.2f} / {self.required:.2f}"]
        if self.symbols:
            lines.append(_folded("X-Spam-Symbols:", self.symbols))
        return ("\r\n".join(lines) + "\r\n").encode("ascii")

    def log_fields(self) -> dict[str, str]:
        if self.error or self.skipped:
            return {"spam": "error" if self.error else "skipped", "spam_why": self.error or self.skipped}
        return {"spam": self.rspamd_action or "none", "spam_score": f"{self.score:.2f}"}


def _clean(text: str) -> str:
    return _UNSAFE.sub(" ", text).replace("(", "[").replace(")", "]")


def _folded(name: str, words: Sequence[str]) -> str:
    """`name` then the words, comma separated, folded before a line passes 78 (RFC 5322 2.1.1)."""
    lines, line = [], name
    for index, word in enumerate(words):
        piece = word + ("," if index < len(words) - 1 else "")
        if len(line) + 1 + len(piece) > 78 and line != name:
            lines.append(line)
            line = "\t" + piece
        else:
            line += " " + piece
    lines.append(line)
    return "\r\n".join(lines)


class RspamdClient:
    """Scores messages with the rspamd normal worker at `url` (e.g. http://127.0.0.1:11333)."""

    def __init__(self, http: HttpPost, url: str, *, timeout: float = 10.0) -> None:
        self.http = http
        self.endpoint = url.rstrip("/") + "/checkv2"
        self.timeout = timeout

    def request_headers(self, envelope: Envelope) -> list[tuple[str, str]]:
        headers = [("IP", envelope.client_ip), ("Helo", envelope.helo),
                   ("From", envelope.mail_from or "<>"), ("Queue-Id", envelope.queue_id)]
        headers += [("Rcpt", rcpt) for rcpt in envelope.recipients]
        if envelope.user:
            headers.append(("User", envelope.user))
        return [(name, _UNSAFE.sub("", value)) for name, value in headers if value]

    async def scan(self, message: bytes, envelope: Envelope) -> Scan:
        """rspamd's verdict on `message`; never raises for rspamd's failures (see `Scan.error`)."""
        try:
            status, body = await self.http.post(self.endpoint, self.request_headers(envelope),
                                                message, timeout=self.timeout,
                                                max_reply=MAX_REPLY)
        except TimeoutError:
            return Scan(error=f"no answer within {self.timeout:g} s")
        except (OSError, ValueError) as exc:
            return Scan(error=f"unreachable: {exc}")
        if status != 200:
            return Scan(error=f"HTTP {status}")
        return parse_reply(body)


def parse_reply(body: bytes) -> Scan:
    """A /checkv2 JSON answer as a Scan (an unknown action or a malformed answer is an error)."""
    try:
        reply = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Scan(error="answer is not JSON")
    if not isinstance(reply, dict):
        return Scan(error="answer is not a JSON object")
    if "error" in reply:
        return Scan(error=f"rspamd: {str(reply['error'])[:200]}")
    rspamd_action = reply.get("action")
    if not isinstance(rspamd_action, str) or rspamd_action not in _ACTIONS:
        return Scan(error=f"unknown action {str(rspamd_action)[:40]!r}")
    symbols_obj = reply.get("symbols")
    names = sorted(n for n in symbols_obj if _SYMBOL.match(n)) if isinstance(symbols_obj, dict) else []
    return Scan(_ACTIONS[rspamd_action], rspamd_action, _number(reply.get("score")),
                _number(reply.get("required_score")), tuple(names[:MAX_SYMBOLS]))


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


__all__ = ["Envelope", "HttpPost", "RspamdClient", "Scan", "SpamAction",
           "parse_reply"]
