"""Mailbox naming rules shared by account creation and message delivery."""

from __future__ import annotations

import threading
from datetime import datetime

# Created with every account; the special-use attributes are RFC 6154's.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
SPECIAL_USE = {name: use for name, use in DEFAULT_FOLDERS if use is not None}


def mailbox_name(name: str) -> str:
    """RFC 3501 5.1: "INBOX" is case-insensitive; every other name is taken as given."""
    return "INBOX" if name.upper() == "INBOX" else name


class UidValidityClock:
    """UIDVALIDITY values (RFC 3501 2.3.1.1): time-based, 32-bit, and strictly increasing within
    this process, so a mailbox deleted and re-created in the same second still gets a new value."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self, now: datetime) -> int:
        with self._lock:
            value = max(int(now.timestamp()), self._last + 1) & 0xFFFFFFFF
            self._last = value
            return value
