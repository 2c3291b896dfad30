"""services.list_consent.ListConsent from marketing's SendGate: submitted list mail asks the
same gate as campaigns and the HTTP API (services may not import marketing; the runtime wires
this in).

A List-Id `<label.domain>` is ours when `domain` is one of our local domains (the envelope
sender may be at a bounce domain) and `label` is exactly a list's `MailingList.list_id_label`
— its name's label and its id, "news-3", as our own campaigns write it. Both parts must match:
the id tells lists whose names give one label apart, the name keeps a third party's
"<sale-2024.example.com>" from being judged against list 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailprime.domain.audience import list_of_label
from mailprime.marketing.gate import SendGate
from mailprime.services.list_consent import ListVerdict
from mailprime.storage.ports import Store


class GateListConsent:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = SendGate(store)

    async def refusals(self, list_id: str, recipients: Sequence[str], *,
                       sender: str) -> ListVerdict | None:
        label, dot, domain = list_id.lower().partition(".")
        if not dot or not await self.store.is_local_domain(domain):
            return None
        wanted = list_of_label(label)
        mailing_list = await self.store.get_list_by_id(wanted) if wanted is not None else None
        if mailing_list is None or mailing_list.list_id_label != label:
            return None
        refused: dict[str, str] = {}
        for address in recipients:
            decision = await self.gate.check(address, sending_domain=domain,
                                             list_id=mailing_list.id)
            if not decision.allowed:
                refused[address] = decision.reason
        return ListVerdict(mailing_list.name, refused)


__all__ = ["GateListConsent"]
