"""A tiny SMTP server that plays a receiving MX with scripted refusals, for making real bounces.

Theory of operation. One thread accepts connections on 127.0.0.1 and serves each in its own
thread with a line-based SMTP dialogue (RFC 5321 4.1): EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT. Each recipient's local part is looked up in `rules`:

- a rule at stage "rcpt" answers RCPT TO with its reply (so that recipient is refused);
- a rule at stage "data" accepts RCPT and answers the final "." of the transaction with its reply
  (the first such rule among the transaction's recipients wins);
- no rule: the recipient is accepted.

Every transaction the sink answered 250 after DATA is recorded (`messages`), so the bounces an
MTA sends back (MAIL FROM:<>) can be collected with `wait_for_bounces`, which blocks on a
condition with a deadline rather than polling. Replies are given as text with one line per
reply line; the sink adds "code-" / "code " continuation marks (RFC 5321 4.2.1).
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

MAX_LINE = 1000  # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF
MAX_MESSAGE = 10_000_000  # generous for the small test messages; bounds a runaway sender


@dataclass(frozen=True)
class Rule:
    stage: Literal["rcpt", "data"]
    code: int
    lines: tuple[str, ...]  # reply text lines, without the code

    def wire(self) -> bytes:
        out = []
        for i, line in enumerate(self.lines):
            sep = " " if i == len(self.lines) - 1 else "-"
            out.append(f"{self.code}{sep}{line}\r\n")
        return "".join(out).encode()


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, text: bytes) -> None:
        self.wfile.write(text)
        self.wfile.flush()

    def handle(self) -> None:
        self.reply(b"220 mx.sink.test ESMTP sink\r\n")
        mail_from: str | None = None
        rcpts: list[str] = []
        while line := self.rfile.readline(MAX_LINE + 2):
            verb = line[:4].upper()
            arg = line[4:].strip().decode("utf-8", "replace")
            if verb == b"EHLO":
                self.reply(b"250-mx.sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n")
            elif verb == b"HELO":
                self.reply(b"250 mx.sink.test\r\n")
            elif verb == b"MAIL":
                mail_from, rcpts = _path(arg), []
                self.reply(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpt = _path(arg)
                rule = self.server.rules.get(rcpt.partition("@")[0].lower())
                if rule is not None and rule.stage == "rcpt":
                    self.reply(rule.wire())
                else:
                    rcpts.append(rcpt)
                    self.reply(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if mail_from is None or not rcpts:
                    self.reply(b"503 5.5.1 Error: need RCPT command\r\n")
                    continue
                self.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = self.read_data()
                rules = [self.server.rules.get(r.partition("@")[0].lower()) for r in rcpts]
                refusal = next((r for r in rules if r is not None and r.stage == "data"), None)
                if refusal is not None:
                    self.reply(refusal.wire())
                else:
                    self.server.record(Received(mail_from, tuple(rcpts), data))
                    self.reply(b"250 2.0.0 Ok: queued\r\n")
                mail_from, rcpts = None, []
            elif verb == b"RSET":
                mail_from, rcpts = None, []
                self.reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"NOOP":
                self.reply(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.reply(b"502 5.5.2 Error: command not recognized\r\n")

    def read_data(self) -> bytes:
        data = bytearray()
        while line := self.rfile.readline(MAX_LINE + 2):
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):  # RFC 5321 4.5.2 dot-stuffing
                line = line[1:]
            if len(data) < MAX_MESSAGE:
                data += line
        return bytes(data)


def _path(arg: str) -> str:
    """The address inside "FROM:<a@b> SIZE=1" or "TO:<a@b>"."""
    _, _, rest = arg.partition(":")
    return rest.strip().split(" ")[0].strip("<>")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rules = dict(rules)
        self.messages: list[Received] = []
        self.changed = threading.Condition()

    def record(self, received: Received) -> None:
        with self.changed:
            self.messages.append(received)
            self.changed.notify_all()


class RejectingSink:
    """`with RejectingSink(rules) as sink:` serves on 127.0.0.1:sink.port until the block ends."""

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self._server = _Server(rules)
        self._thread = threading.Thread(target=self._server.serve_forever, name="bounce-sink",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> RejectingSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def bounces(self) -> list[Received]:
        with self._server.changed:
            return [m for m in self._server.messages if m.mail_from == ""]

    def wait_for_bounces(self, n: int, timeout: float) -> list[Received]:
        """Block until at least n messages from the null sender arrived, or raise TimeoutError."""
        with self._server.changed:
            ok = self._server.changed.wait_for(
                lambda: sum(m.mail_from == "" for m in self._server.messages) >= n, timeout)
            found = [m for m in self._server.messages if m.mail_from == ""]
        if not ok:
            raise TimeoutError(f"{len(found)} of {n} bounces within {timeout}s")
        return found
