"""Injecting a locally generated message (a DSN, later API and campaign mail) into the same
path as SMTP mail: recipients resolved to local mailboxes or the outbound queue, then one
durable accept. Mail that leaves is DKIM-signed first when its From domain has an active key.

A caller that must never send twice chooses the queue id itself, records it durably first,
and passes it here (web.messages_api, for an Idempotency-Key): the id is the queue's primary
key, so after a crash it can ask the store whether that id was accepted
(`accepted_queue_ids`) instead of sending again under a new one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from mailprime.domain.errors import InvalidAddress
from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, LocalDelivery, Priority
from mailprime.logline import emit
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.recipients import resolve_recipient
from mailprime.storage.ports import DirectoryStore, Store

log = logging.getLogger("mailprime.inject")


class Injector:
    """Satisfies delivery.worker.MailInjector."""

    def __init__(self, store: Store, on_queued: Callable[[], None] | None = None,
                 directory: DirectoryStore | None = None, *,
                 dkim: DkimSigner | None = None) -> None:
        self.store = store
        self.dkim = dkim
        self.directory: DirectoryStore = directory if directory is not None else store
        self.on_queued = on_queued  # wakes the delivery worker when remote mail was queued

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "local",
                     queue_id: QueueId | None = None) -> QueueId | None:
        """Accepts the message (under `queue_id` if given, else a new id) and returns its id;
        None when no recipient is deliverable (nothing is accepted then)."""
        local: list[LocalDelivery] = []
        remote: list[EnvelopeRecipient] = []
        for recipient in recipients:
            try:
                resolution = await resolve_recipient(self.directory, recipient)
            except InvalidAddress:
                continue
            for delivery in resolution.local:
                if all(d.account_id != delivery.account_id for d in local):
                    local.append(LocalDelivery(delivery.account_id, recipient=recipient))
            remote.extend(EnvelopeRecipient(a) for a in resolution.remote)
        if not local and not remote:
            emit(log, "inject", logging.WARNING, from_=f"<{sender}>", status="dropped",
                 reason="no deliverable recipient")
            return None
        if remote and self.dkim is not None:
            content = await self.dkim.sign(content)
        queue_id = queue_id or new_queue_id()
        await self.store.accept(Acceptance(queue_id=queue_id, content=content, sender=sender,
                                           local=tuple(local), remote=tuple(remote),
                                           priority=priority, source=source))
        if remote and self.on_queued is not None:
            self.on_queued()
        emit(log, queue_id, from_=f"<{sender}>", nrcpt=len(recipients), source=source,
             status="injected")
        return queue_id
