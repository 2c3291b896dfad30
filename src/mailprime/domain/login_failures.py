"""How a server answers failed logins: one policy for IMAP and POP3 (and whatever else takes
passwords), so both slow a guesser down alike."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DELAY = 8.0  # seconds: the longest pause after a failed login, by default


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """After each failed login the answer waits longer, and after `max_failures` the connection
    is closed (RFC 9051 6.2.3 lets a server refuse further attempts, RFC 1939 says a POP3 server
    may close after failures; the delay slows guessing without locking the account out)."""

    first_delay: float = 1.0
    max_delay: float = MAX_DELAY
    max_failures: int = 3

    def delay(self, failures: int) -> float:
        """The wait before answering the `failures`-th failure (1, 2, 4... seconds, bounded)."""
        if failures <= 0 or self.first_delay <= 0:
            return 0.0
        return float(min(self.first_delay * 2 ** min(failures - 1, 16), self.max_delay))


__all__ = ["MAX_DELAY", "FailurePolicy"]
