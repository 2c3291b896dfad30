"""Consent use cases: subscribe, confirm, unsubscribe — each one a membership change together with
its line in the append-only consent ledger (storage writes both in one transaction).

Theory of operation
-------------------
Who may be mailed is decided by memberships; why we believe they agreed is the ledger. A
subscription through a double opt-in list starts unconfirmed and becomes confirmed when the
signed link is followed (the web layer, later); a single opt-in list takes the member as
confirmed at once. Unsubscribing is always possible and always recorded, whatever the source
(a form, the API, the RFC 8058 one-click POST, an operator). An import may only claim
confirmation when the operator says so explicitly (marketing.csv_io's --confirmed).
"""

from __future__ import annotations

from mailprime.domain.audience import (
    ConsentEvidence,
    MailingList,
    Membership,
    MembershipStatus,
    OptIn,
)
from mailprime.domain.errors import NotFound
from mailprime.domain.ids import ContactId, ListId
from mailprime.marketing.contacts import contact_input
from mailprime.storage.ports import AudienceStore


def initial_status(mailing_list: MailingList) -> MembershipStatus:
    return (MembershipStatus.UNCONFIRMED if mailing_list.opt_in is OptIn.DOUBLE
            else MembershipStatus.CONFIRMED)


async def subscribe(store: AudienceStore, email: str, list_name: str, evidence: ConsentEvidence,
                    *, name: str = "") -> Membership:
    """Adds the address (as a contact if new) to the list: unconfirmed on a double opt-in list,
    confirmed on a single opt-in one."""
    mailing_list = await _list(store, list_name)
    contact = await store.get_contact(email)
    if contact is None:
        contact = await store.add_contact(contact_input(email, name))
    return await join(store, contact.id, mailing_list, evidence)


async def join(store: AudienceStore, contact_id: ContactId, mailing_list: MailingList,
               evidence: ConsentEvidence) -> Membership:
    """The contact asked to join (a form, the API). A new or unsubscribed member starts
    unconfirmed on a double opt-in list, confirmed on a single opt-in one (the ledger then shows
    consent given and confirmed); a member who has confirmed stays confirmed: asking again must
    not take a confirmation back."""
    current = await store.get_membership(contact_id, mailing_list.id)
    if current is not None and current.status is MembershipStatus.CONFIRMED:
        return current
    status = initial_status(mailing_list)
    if (current is not None and current.status is MembershipStatus.UNSUBSCRIBED
            and status is MembershipStatus.CONFIRMED):
        # Back on a single opt-in list: "given" first, so the ledger shows the new consent.
        await store.set_membership(contact_id, mailing_list.id,
                                   status=MembershipStatus.UNCONFIRMED, evidence=evidence)
    return await store.set_membership(contact_id, mailing_list.id, status=status,
                                      evidence=evidence)


async def confirm_joined(store: AudienceStore, contact_id: ContactId, list_id: ListId,
                         evidence: ConsentEvidence) -> Membership | None:
    """The double opt-in link was followed: an unconfirmed membership becomes confirmed. A
    confirmed one is returned as it is; an unsubscribed one is left (the person left after the
    link was sent, and that later act wins); None when there is no membership (any more)."""
    current = await store.get_membership(contact_id, list_id)
    if current is None or current.status is not MembershipStatus.UNCONFIRMED:
        return current
    return await store.set_membership(contact_id, list_id, status=MembershipStatus.CONFIRMED,
                                      evidence=evidence)


async def confirm(store: AudienceStore, email: str, list_name: str,
                  evidence: ConsentEvidence) -> Membership:
    return await _change(store, email, list_name, MembershipStatus.CONFIRMED, evidence)


async def unsubscribe(store: AudienceStore, email: str, list_name: str,
                      evidence: ConsentEvidence) -> Membership:
    return await _change(store, email, list_name, MembershipStatus.UNSUBSCRIBED, evidence)


async def _change(store: AudienceStore, email: str, list_name: str, status: MembershipStatus,
                  evidence: ConsentEvidence) -> Membership:
    mailing_list = await _list(store, list_name)
    contact = await store.get_contact(email)
    if contact is None or await store.get_membership(contact.id, mailing_list.id) is None:
        raise NotFound(f"{email} is not on list {list_name!r}")
    return await store.set_membership(contact.id, mailing_list.id, status=status,
                                      evidence=evidence)


async def _list(store: AudienceStore, name: str) -> MailingList:
    mailing_list = await store.get_list(name)
    if mailing_list is None:
        raise NotFound(f"no list {name!r}")
    return mailing_list
