"""The one gate: may this address be sent this mail? Asked by every marketing send path.

Theory of operation
-------------------
Before anything is enqueued, a send path asks `SendGate.check`. The answer is refused when:

1. the address is suppressed for the sending domain (a global entry, that domain's own entry,
   or the hashed entry an erasure left) — for every purpose, transactional included: a hard
   bounce or a complaint is a fact about the address, not about the campaign;
2. for a list send (list_id given): the address is not a contact, not a member of the list, has
   unsubscribed, or has not confirmed a double opt-in list.

A batch (`check_many`, campaign dispatch): the same rules, decided by the same functions, on
facts the store reads for the whole batch in one transaction (AudienceStore.send_gate_facts:
a few statements per batch instead of four reads per address). Several lists: allowed when
any list allows the address, else the first list's refusal (a suppression refuses for all).

The gate reads, it never writes: the caller records what it did (an event, a skipped send).
It lives in marketing, not services: the layers contract keeps services, delivery and marketing
side by side (none imports another), so the SMTP submission path keeps its own suppression
check (services.feedback -> services.suppression), which reads the same suppression table with
the same `find_suppression` and therefore also refuses hashed (erased) addresses. Campaign
dispatch and the HTTP API's sends (web may import marketing) call this gate.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailprime.domain.audience import Contact, MailingList, Membership, MembershipStatus, OptIn
from mailprime.domain.deliverability import Suppression
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import ContactId, ListId
from mailprime.storage.ports import AddressFacts, GateFacts


class Purpose(enum.StrEnum):
    MARKETING = "marketing"  # a campaign or newsletter: needs list consent when a list is named
    TRANSACTIONAL = "transactional"  # receipts, password resets: only suppressions apply


class Refusal(enum.StrEnum):
    SUPPRESSED = "suppressed"
    INVALID_ADDRESS = "invalid_address"
    NO_SUCH_LIST = "no_such_list"
    NOT_A_MEMBER = "not_a_member"
    UNSUBSCRIBED = "unsubscribed"
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True, slots=True)
class GateDecision:
    allowed: bool
    reason: str  # a sentence a person can read: "suppressed (hard bounce, global list)"
    refusal: Refusal | None = None  # machine-readable cause when refused
    suppression: Suppression | None = None


ALLOWED = GateDecision(True, "allowed")


class GateStore(Protocol):
    """The storage the gate reads (storage.ports.Store satisfies it)."""

    async def find_suppression(self, address: str, sending_domain: str = "") -> Suppression | None:
        ...

    async def get_contact(self, email: str) -> Contact | None: ...
    async def get_list_by_id(self, list_id: ListId) -> MailingList | None: ...
    async def get_membership(self, contact_id: ContactId, list_id: ListId) -> Membership | None:
        ...

    async def send_gate_facts(self, addresses: Sequence[str], *, sending_domain: str,
                              list_ids: Sequence[ListId]) -> GateFacts: ...


# ---- the rules (one place for both paths) ---------------------------------------------------

def _suppressed(entry: Suppression) -> GateDecision:
    where = "global list" if not entry.scope else f"{entry.scope}'s list"
    return GateDecision(False, f"suppressed ({entry.reason.value.replace('_', ' ')}, {where})",
                        Refusal.SUPPRESSED, entry)


def _no_list(list_id: ListId) -> GateDecision:
    return GateDecision(False, f"no list #{list_id}", Refusal.NO_SUCH_LIST)


def _invalid(message: str) -> GateDecision:
    return GateDecision(False, f"invalid address: {message}", Refusal.INVALID_ADDRESS)


def _consent(mailing_list: MailingList, status: MembershipStatus | None) -> GateDecision:
    """The decision for an existing list, from the address's membership status (None: none)."""
    if status is None:
        return GateDecision(False, f"not a member of list {mailing_list.name!r}",
                            Refusal.NOT_A_MEMBER)
    if status is MembershipStatus.UNSUBSCRIBED:
        return GateDecision(False, f"unsubscribed from list {mailing_list.name!r}",
                            Refusal.UNSUBSCRIBED)
    if status is MembershipStatus.UNCONFIRMED and mailing_list.opt_in is OptIn.DOUBLE:
        return GateDecision(False, f"has not confirmed the double opt-in list "
                                   f"{mailing_list.name!r}", Refusal.UNCONFIRMED)
    return ALLOWED


def decide(facts: AddressFacts, lists: Mapping[ListId, MailingList], list_ids: Sequence[ListId],
           purpose: Purpose = Purpose.MARKETING) -> GateDecision:
    """One address's decision from its facts (see the module doc for several lists)."""
    if facts.suppression is not None:
        return _suppressed(facts.suppression)
    if not list_ids or purpose is Purpose.TRANSACTIONAL:
        return ALLOWED
    first: GateDecision | None = None
    for list_id in list_ids:
        mailing_list = lists.get(list_id)
        if mailing_list is None:
            decision = _no_list(list_id)
        elif facts.invalid:
            decision = _invalid(facts.invalid)
        else:
            decision = _consent(mailing_list, facts.memberships.get(list_id))
        if decision.allowed:
            return decision
        first = first or decision
    assert first is not None
    return first


class SendGate:
    def __init__(self, store: GateStore) -> None:
        self._store = store

    async def check(self, address: str, *, sending_domain: str, list_id: ListId | None = None,
                    purpose: Purpose = Purpose.MARKETING) -> GateDecision:
        """One address (the API's sends, a subscription): reads only what the answer needs."""
        entry = await self._store.find_suppression(address, sending_domain)
        if entry is not None:
            return _suppressed(entry)
        if list_id is None or purpose is Purpose.TRANSACTIONAL:
            return ALLOWED
        mailing_list = await self._store.get_list_by_id(list_id)
        if mailing_list is None:
            return _no_list(list_id)
        try:
            contact = await self._store.get_contact(address)
        except InvalidAddress as exc:
            return _invalid(exc.message)
        membership = (await self._store.get_membership(contact.id, list_id)
                      if contact is not None else None)
        return _consent(mailing_list, membership.status if membership is not None else None)

    async def check_many(self, addresses: Sequence[str], *, sending_domain: str,
                         list_ids: Sequence[ListId] = (),
                         purpose: Purpose = Purpose.MARKETING) -> list[GateDecision]:
        """A decision per address, in order, from one read of the store (campaign batches).
        With one list, each is what `check` would answer; with several, see the module doc."""
        if not addresses:
            return []
        facts = await self._store.send_gate_facts(addresses, sending_domain=sending_domain,
                                                  list_ids=list_ids)
        return [decide(f, facts.lists, list_ids, purpose) for f in facts.addresses]
