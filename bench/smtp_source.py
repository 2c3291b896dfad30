"""The load every SMTP case sends, and what one run of it measured.

Both halves of a case (the peer and mailprime) are driven by the same `send()` (Postfix's
smtp-source), so a ratio compares servers, not load generators.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.postfix import run_smtp_source


@dataclass(frozen=True, slots=True)
class Load:
    messages: int = 5_000
    sessions: int = 20
    size: int = 10 * 1024  # payload bytes per message, headers not counted (smtp-source -l)
    sender: str = "load@source.test"
    recipient: str = "sink@bench.test"
    # One connection per session for all its messages (smtp-source -d), as an MTA's
    # connection cache does.
    reuse_connections: bool = True


@dataclass(frozen=True, slots=True)
class Measurement:
    """One run: `accepted_s` from the first connect until smtp-source exited (every message had
    its 250), `done_s` from the same start until the last message had left the server (queue
    drained, or the downstream sink counted it)."""

    messages: int
    accepted_s: float
    done_s: float

    @property
    def accept_rate(self) -> float:
        return self.messages / self.accepted_s

    @property
    def rate(self) -> float:
        return self.messages / self.done_s


def send(host: str, port: int, load: Load, *, timeout: float = 900.0) -> float:
    """Send the load to host:port; return seconds from start until smtp-source exited."""
    return run_smtp_source(host, port, sessions=load.sessions, messages=load.messages, size=load.size,
                           sender=load.sender, recipient=load.recipient,
                           reuse_connections=load.reuse_connections, timeout=timeout)
