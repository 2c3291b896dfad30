"""Messages to the List-Unsubscribe mailto: verified and applied like the one-click POST, never
stored, never answered.

Theory of operation
-------------------
Every campaign message's List-Unsubscribe names, beside the HTTPS one-click URL, the mailto
`unsubscribe@<sending domain>?subject=unsubscribe-<token>` (marketing.link_rewriter; RFC 2369
3.2, RFC 6068 hfields). A mail client's "unsubscribe" button that uses it sends a message to
that address with that Subject. The inbound service (services.inbound) calls in at two points:

RCPT (`on_rcpt`). `unsubscribe@D`, or `unsubscribe+<token>@D` (the token as the local part's
detail, when a token ever fits RFC 5321's 64 octets), at a local domain D is ours unless the
name belongs to someone: accepted (250 2.1.5) as a target with no account behind it. An
account of that name, or an alias whose source is that very address, owns it (the operator
made it, and its mail must not vanish): then `unsubscribe@D` and every `unsubscribe+…@D` are
left to the usual resolution, on either role. A catch-all alias (`@D`) does not own the name:
it takes what nobody else claims, and this address is claimed by the unsubscribe service.
Nothing is verified here: the token is in the Subject, after DATA.

End of data (`on_data_end`). The tokens are taken from the Subject (`unsubscribe-<token>`
anywhere in it, so "Re: " or a gateway's tag in front does no harm; RFC 2047 encoded-words
decoded, as a client may encode a long Subject) and from the targets' local parts, at most
MAX_TOKENS of them, and each goes to the `Unsubscriber` the runtime injected (marketing's
MailtoUnsubscriber: services may not import marketing). It verifies the token's signature and
unsubscribes exactly as the one-click POST does (same UNSUBSCRIBED event, same consent-ledger
withdrawal, source "mailto"). A bad or forged token, or none at all, unsubscribes nothing and
is logged; the message is accepted all the same and dropped, with no bounce and no answer
(a refusal would send backscatter to whatever address the envelope names). The message is
never filed: with no other recipient the answer is 250 here and the body is discarded;
otherwise the caller goes on to accept it for the others.

Doing it twice is harmless: the second time the unsubscriber changes nothing and records
nothing (it says so, and we log "already").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from typing import Protocol

from mailprime.domain.address import Address
from mailprime.domain.errors import DomainError, InvalidAddress
from mailprime.logline import emit
from mailprime.message.header_lexer import named_fields
from mailprime.proto.smtp.types import Reply
from mailprime.storage.ports import DirectoryStore

log = logging.getLogger("mailprime.unsubscribe")

LOCAL_PART = "unsubscribe"  # what marketing.link_rewriter writes in the mailto
SUBJECT_PREFIX = "unsubscribe-"
DETAIL_SEPARATOR = "+"
MAX_TOKEN = 4096  # characters (marketing.tokens.MAX_TOKEN): longer ones are not looked at
MAX_TOKENS = 4  # tokens tried per message (one is what a client sends)
MAX_SUBJECT = 4 * 1024  # characters of the Subject read: a token is ~110, 4096 at most
_TOKEN = re.compile(r"unsubscribe-([A-Za-z0-9_-]{16,4096})", re.IGNORECASE)
_DETAIL = re.compile(r"[A-Za-z0-9_-]{16,64}")


class Unsubscriber(Protocol):
    """Verifies a token and unsubscribes what it names (marketing.unsubscribe.MailtoUnsubscriber)."""

    async def __call__(self, token: str, *, client_ip: str) -> tuple[str, bool] | None:
        """(the address the token names, whether this call unsubscribed it), or None when the
        token is not valid."""
        ...


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    """A RCPT at the unsubscribe address; `token` is the local part's detail ("" for none)."""

    address: str
    token: str = ""


class MailtoUnsubscribe:
    def __init__(self, unsubscriber: Unsubscriber, directory: DirectoryStore) -> None:
        self.unsubscriber = unsubscriber
        self.directory = directory

    # RCPT ---------------------------------------------------------------------------------------
    async def on_rcpt(self, recipient: str) -> tuple[Reply, UnsubscribeTarget] | None:
        """250 and the target when `recipient` is the unsubscribe address at a local domain;
        None: not ours, resolve it as usual."""
        local = recipient.strip().strip("<>").rpartition("@")[0].lower()
        if local != LOCAL_PART and not local.startswith(LOCAL_PART + DETAIL_SEPARATOR):
            return None  # the common case, decided without parsing
        try:
            addr = Address.parse(recipient)
        except InvalidAddress:
            return None  # the caller refuses it with its own words
        if not await self.directory.is_local_domain(addr.domain):
            return None  # not our domain: the relay check refuses it
        base = f"{LOCAL_PART}@{addr.domain}"
        if await self._owned(base) or (addr.key != base.lower() and await self._owned(addr.key)):
            return None  # an account's or an alias's: resolved and filed as usual
        detail = addr.local.partition(DETAIL_SEPARATOR)[2]
        token = detail if _DETAIL.fullmatch(detail) else ""
        return Reply(250, "Ok", "2.1.5"), UnsubscribeTarget(recipient, token)

    async def _owned(self, address: str) -> bool:
        """An account, or an alias with exactly this source, has `address` (a catch-all does
        not count). The cached look-ups answer; the alias list is read only when the address
        resolves to some alias, to tell its own from the domain's catch-all (the directory
        port resolves both alike)."""
        if await self.directory.get_account(address) is not None:
            return True
        if not await self.directory.resolve_aliases(address):
            return False
        key = address.lower()
        return any(alias.source.lower() == key for alias in await self.directory.list_aliases())

    # End of data --------------------------------------------------------------------------------
    async def on_data_end(self, targets: Sequence[UnsubscribeTarget], head: bytes, *,
                          client_ip: str, session: str, others: bool) -> Reply | None:
        """Applies the tokens the message carries. The reply is the final one when nothing is
        left to store (no other recipients); None: the caller accepts it for the others."""
        tokens = _tokens(targets, head)
        to = ",".join(f"<{t.address}>" for t in targets)
        if not tokens:
            emit(log, session, logging.INFO, to=to, client=client_ip, status="unsubscribe-ignored",
                 reason="no unsubscribe token in the Subject or the address")
        outcomes = []
        for token in tokens:
            try:
                result = await self.unsubscriber(token, client_ip=client_ip)
            except DomainError as exc:
                emit(log, session, logging.ERROR, to=to, status="unsubscribe-failed",
                     reason=exc.message)
                outcomes.append("failed")
                continue
            if result is None:
                emit(log, session, logging.INFO, to=to, client=client_ip,
                     status="unsubscribe-ignored", reason="invalid token")
                outcomes.append("invalid")
                continue
            address, changed = result
            emit(log, session, to=to, client=client_ip, address=f"<{address}>",
                 status="unsubscribed" if changed else "unsubscribe-already", source="mailto")
            outcomes.append("done" if changed else "already")
        if others:
            return None
        if "failed" in outcomes and not any(o in ("done", "already") for o in outcomes):
            # Storage failed: a temporary refusal makes the client's server try again later.
            return Reply(451, "Local error in processing; try again later", "4.3.0")
        return Reply(250, "Ok", "2.0.0")


def _tokens(targets: Sequence[UnsubscribeTarget], head: bytes) -> list[str]:
    """The candidate tokens, distinct, in order: the Subject's, then the addresses'."""
    found: list[str] = []
    subject = _subject(head)
    if subject:
        found.extend(m.group(1) for m in _TOKEN.finditer(subject))
    found.extend(t.token for t in targets if t.token)
    unique = list(dict.fromkeys(t for t in found if len(t) <= MAX_TOKEN))
    return unique[:MAX_TOKENS]


def _subject(head: bytes) -> str:
    """The message's Subject, unfolded, encoded-words decoded (at most MAX_SUBJECT characters)."""
    fields = named_fields(head, [b"Subject"])
    if not fields:
        return ""
    raw = fields[0].value(head)[:MAX_SUBJECT].decode("utf-8", "replace").strip()
    if "=?" not in raw:
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):  # a broken encoded-word: read it as written
        return raw


__all__ = [
    "LOCAL_PART",
    "MailtoUnsubscribe",
    "UnsubscribeTarget",
    "Unsubscriber",
]
