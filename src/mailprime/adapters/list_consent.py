"""services.list_consent.ListConsent from marketing's SendGate: submitted list mail asks the
same gate as campaigns and the HTTP API (services may not import marketing; the runtime wires
this in).

A List-Id `<label.domain>` is ours when `domain` is one of our local domains (the envelope
sender may be at a bounce domain) and `label` is exactly a list's `MailingList.list_id_label`
— its name's label and its id, "news-3", as our own campaigns write it (a long name's label
shortened as they shorten it: marketing.message_builder.list_id_for). Both parts must match:
the id tells lists whose names give one label apart, the name keeps a third party's
"<sale-2024.example.com>" from being judged against list 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailprime.domain.audience import list_of_label
from mailprime.marketing.gate import SendGate
from mailprime.marketing.message_builder import list_id_for
from mailprime.services.list_consent import ListVerdict
from mailprime.storage.ports import Store


class GateListConsent:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = SendGate(store)

    async def refusals(self, list_id: str, recipients: Sequence[str], *,
                       sender: str) -> ListVerdict | None:
        list_id = list_id.lower()
        label, dot, domain = list_id.partition(".")
        if not dot or not await self.store.is_local_domain(domain):
            return None
        wanted = list_of_label(label)
        mailing_list = await self.store.get_list_by_id(wanted) if wanted is not None else None
        # The form our campaigns write: a long name's label is shortened there to keep the
        # list-id within RFC 2919's 255 octets, and the uncut label would not match it.
        if mailing_list is None or list_id != list_id_for(mailing_list.list_id_label, domain):
            return None
        refused: dict[str, str] = {}
        for address in recipients:
            decision = await self.gate.check(address, sending_domain=domain,
                                             list_id=mailing_list.id)
            if not decision.allowed:
                refused[address] = decision.reason
        return ListVerdict(mailing_list.name, refused)


__all__ = ["GateListConsent"]
