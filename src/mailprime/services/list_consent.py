"""List mail submitted over SMTP asks the same consent gate as campaigns and the API.

Theory of operation. A marketing tool that submits over SMTP (port 587) marks list mail with
a List-Id field (RFC 2919). When that List-Id names one of our lists — `<label.domain>`, the
form our own campaigns write (domain.audience.list_label) at the sender's domain — each remote
recipient is put to the one gate (marketing.gate.SendGate, lent through the `ListConsent` port
by the runtime: services may not import marketing): a recipient who is not a confirmed member
of that list, has unsubscribed, or is suppressed, is not enqueued. The suppression check at
RCPT (services.feedback) still runs for every submitted message, list or not; this is the list
consent that can only be known once the header section has arrived.

SMTP has one reply to DATA for all recipients, so refused recipients are dropped from the
transaction and logged, one line each with the gate's reason (what Postfix users know from a
milter removing recipients); when no recipient is left, the message is refused with 550 5.7.1
naming the list, so the tool sees that nothing was sent. A List-Id of a list we do not have is
not ours to judge: the message goes on as any other submission.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailprime.message.dkim_canon import split_fields
from mailprime.message.headers import header_section

# RFC 2919 2: the list-id in angle brackets, after an optional phrase; at most 255 octets.
_LIST_ID = re.compile(rb"<([A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]{1,255})>")


class ListConsent(Protocol):
    async def refusals(self, list_id: str, recipients: Sequence[str], *,
                       sender: str) -> ListVerdict | None:
        """None when `list_id` names none of our lists; else the list and the refused
        recipients with the gate's reasons."""
        ...


@dataclass(frozen=True, slots=True)
class ListVerdict:
    list_name: str
    refused: dict[str, str]  # recipient -> the gate's reason, a sentence


def list_id_of(head: bytes) -> str | None:
    """The list-id of the message's (first) List-Id field, lower case; None without one."""
    section = header_section(head)
    for name, value in split_fields(section):
        if name.strip(b" \t").lower() == b"list-id":
            found = _LIST_ID.search(value.replace(b"\r\n", b""))
            return found.group(1).decode("ascii").lower() if found else None
    return None


__all__ = ["ListConsent", "ListVerdict", "list_id_of"]
