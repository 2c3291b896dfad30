"""Sandbox transport: every outbound message lands in a local capture mailbox instead of the
internet, so a new user can try everything on one machine (`[delivery] sandbox = true`)."""

from __future__ import annotations

from collections.abc import Sequence

from mailprime.domain.ids import AccountId, new_queue_id
from mailprime.domain.mail import (
    Acceptance,
    DeliveryJob,
    LocalDelivery,
    RecipientOutcome,
    RecipientStatus,
    prepend,
)
from mailprime.storage.ports import BlobReader, MailStore

SANDBOX_FOLDER = "Sandbox"


class SandboxTransport:
    def __init__(self, store: MailStore, capture_account: AccountId, capture_address: str) -> None:
        self.store = store
        self.capture_account = capture_account
        self.capture_address = capture_address

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        note = ("X-Mailprime-Sandbox: captured; envelope-from=<{}>; to={}\r\n".format(
            job.message.sender, ",".join(f"<{r.address}>" for r in job.recipients))).encode()
        # Copied through a spool writer, so a large message never sits in memory whole.
        writer = self.store.new_spool_writer()
        try:
            async for chunk in content.chunks():
                await writer.write(chunk)
            copy = await writer.finish()
            await self.store.accept(Acceptance(
                queue_id=new_queue_id(), content=prepend(note, copy), sender=job.message.sender,
                local=(LocalDelivery(self.capture_account, self.capture_address, SANDBOX_FOLDER),),
                source="sandbox"))
        finally:
            await writer.discard()  # a no-op once the accept adopted the file
        reply = f"250 2.0.0 captured in sandbox mailbox {self.capture_address}/{SANDBOX_FOLDER}"
        return [RecipientOutcome(r.id, RecipientStatus.DELIVERED, reply, remote_host="sandbox")
                for r in job.recipients]

    async def close(self) -> None:
        return None
