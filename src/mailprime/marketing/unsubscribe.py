"""Unsubscribing the address an unsubscribe token names: the one act behind both ways a message's
List-Unsubscribe can be used — the RFC 8058 one-click POST (web.unsubscribe) and a message to
its mailto (RFC 2369 3.2; services.unsubscribe_mail, through `MailtoUnsubscriber`).

What "unsubscribed" means, in order:
* the token names a list and the address is a contact with a membership on it: that membership
  becomes `unsubscribed` (the audience store writes the consent ledger's withdrawal with it); no
  suppression, as the person left one list, not all mail;
* otherwise: a suppression entry (reason `unsubscribe`), global or for the sending domain as
  [bounces] scope says, plus a withdrawal line in the consent ledger (purpose "marketing").
Either way an UNSUBSCRIBED event (attrs: the send's ids, how, list, source, machine guess)
records the act, once: doing it again changes nothing and records nothing.

It lives here, not in web/, so that the MX can unsubscribe without importing the web stack
(which runtime imports only when [http] is on).
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from mailprime.domain.audience import ConsentAction, ConsentEvidence, ConsentSource, MembershipStatus
from mailprime.domain.clock import Clock
from mailprime.domain.deliverability import GLOBAL_SCOPE, Suppression, SuppressionReason
from mailprime.domain.errors import DomainError
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.marketing.tokens import CampaignRecipient, Subject, TokenSigner, UnsubscribeToken
from mailprime.storage.ports import Store


def subject_attrs(subject: Subject) -> tuple[tuple[str, str], ...]:
    """The ids an event about this send carries (web.tracking's OPENED and CLICKED too)."""
    if isinstance(subject, CampaignRecipient):
        return (("campaign_id", str(subject.campaign_id)), ("contact_id", str(subject.contact_id)))
    return (("recipient_id", str(subject.recipient_id)),)


def subject_queue(subject: Subject) -> QueueId | None:
    """The queue id an event about this send is filed under (a campaign's has none)."""
    return None if isinstance(subject, CampaignRecipient) else subject.queue_id


async def apply_unsubscribe(store: Store, token: UnsubscribeToken, *, scope_mode: str,
                            now: datetime, source: ConsentSource, ip: str = "",
                            machine: bool = False) -> bool:
    """Applies the unsubscribe the (verified) token stands for; True if it changed anything.
    `scope_mode` is [bounces] scope ("domain" or "global")."""
    evidence = ConsentEvidence(source=source, ip=ip)
    how = ""
    contact_id = token.subject.contact_id if isinstance(token.subject, CampaignRecipient) else None
    if token.list_id is not None:
        try:
            if contact_id is None:
                contact = await store.get_contact(token.address)
                contact_id = contact.id if contact else None
            membership = (await store.get_membership(contact_id, token.list_id)
                          if contact_id is not None else None)
        except DomainError:
            membership = None
        if membership is not None and contact_id is not None:
            if membership.status is MembershipStatus.UNSUBSCRIBED:
                return False
            await store.set_membership(contact_id, token.list_id,
                                       status=MembershipStatus.UNSUBSCRIBED, evidence=evidence)
            how = "list"
    if not how:
        scope = (token.sending_domain if scope_mode == "domain" and token.sending_domain
                 else GLOBAL_SCOPE)
        entry = Suppression(address=token.address, scope=scope,
                            reason=SuppressionReason.UNSUBSCRIBE, created_at=now,
                            detail=f"unsubscribed ({source.value})",
                            queue_id=subject_queue(token.subject))
        if not await store.suppress(entry):
            return False
        how = "suppression"
        await store.append(EventKind.SUPPRESSED, entry.queue_id, token.address, entry.detail,
                           (("reason", "unsubscribe"), ("scope", scope or "global"),
                            ("source", source.value)))
        with contextlib.suppress(DomainError):  # an address the ledger refuses: suppressed still
            await store.record_consent(token.address, purpose="marketing",
                                       action=ConsentAction.WITHDRAWN, evidence=evidence)
    await store.append(EventKind.UNSUBSCRIBED, subject_queue(token.subject), token.address,
                       f"unsubscribed ({source.value})",
                       (*subject_attrs(token.subject), ("how", how),
                        ("list_id", str(token.list_id or "")), ("source", source.value),
                        ("machine", "yes" if machine else "no")))
    return True


class MailtoUnsubscriber:
    """What services.unsubscribe_mail calls with a token found in a message to the mailto: it
    verifies the token with the link keys (marketing.tokens) and applies it as the one-click
    POST does, with source "mailto". The runtime hands it to the MX (services may not import
    marketing)."""

    def __init__(self, store: Store, signer: TokenSigner, clock: Clock, *,
                 scope_mode: str) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.scope_mode = scope_mode

    async def __call__(self, token: str, *, client_ip: str) -> tuple[str, bool] | None:
        """(the address the token names, whether this unsubscribed it now), or None when the
        token is not one of ours (forged, altered, another purpose)."""
        parsed = self.signer.verify(token, UnsubscribeToken)
        if parsed is None:
            return None
        changed = await apply_unsubscribe(self.store, parsed, scope_mode=self.scope_mode,
                                          now=self.clock.now(), source=ConsentSource.MAILTO,
                                          ip=client_ip)
        return parsed.address, changed


__all__ = ["MailtoUnsubscriber", "apply_unsubscribe", "subject_attrs", "subject_queue"]
