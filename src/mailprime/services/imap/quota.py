"""Per-account quota as IMAP reports and enforces it (RFC 9208 QUOTA).

One quota root, "" (the whole account), for every mailbox. Resources: STORAGE (RFC 9208 5.1,
reported in units of 1024 octets) and MESSAGE (5.2, a count). A limit of 0 means unlimited; a
resource without a limit is not reported, and with no limit at all no root is named.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailprime.domain.mail import AccountUsage
from mailprime.proto.imap.types import Atom, MailboxName, ParenList, String, Untagged, Value

ROOT = ""


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    storage: int = 0  # octets; 0: unlimited
    messages: int = 0  # 0: unlimited

    @property
    def limited(self) -> bool:
        return bool(self.storage or self.messages)

    def refusal(self, usage: AccountUsage, *, adding_octets: int, adding_messages: int) -> str | None:
        """Why adding that much would go over the quota (RFC 9208 4.1.4 OVERQUOTA), or None."""
        if self.storage and usage.storage + adding_octets > self.storage:
            return "Quota exceeded (storage)"
        if self.messages and usage.messages + adding_messages > self.messages:
            return "Quota exceeded (number of messages)"
        return None

    def quota_response(self, usage: AccountUsage) -> Untagged:
        """`* QUOTA "" (STORAGE used limit MESSAGE used limit)` (RFC 9208 5.1: STORAGE in KiB,
        rounded up so a non-empty account never shows 0)."""
        resources: list[Value] = []
        if self.storage:
            resources += [Atom("STORAGE"), -(-usage.storage // 1024), self.storage // 1024]
        if self.messages:
            resources += [Atom("MESSAGE"), usage.messages, self.messages]
        return Untagged((Atom("QUOTA"), String(ROOT), ParenList(tuple(resources))))

    def quotaroot_response(self, mailbox: str) -> Untagged:
        """`* QUOTAROOT mailbox ""` (no root when nothing is limited)."""
        roots: tuple[Value, ...] = (String(ROOT),) if self.limited else ()
        return Untagged((Atom("QUOTAROOT"), MailboxName(mailbox), *roots))
