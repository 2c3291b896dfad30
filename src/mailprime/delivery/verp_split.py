"""VERP on delivery: one mail transaction per recipient, each with its own signed return path.

Theory of operation
-------------------
A job is one message to one destination domain with any number of recipients; normally it is
one SMTP transaction. With VERP (message.verp) each recipient needs its own MAIL FROM, and an
SMTP transaction has exactly one, so the job is split: for each recipient in turn, the same
message with the sender `<prefix>+<token>@<bounce domain>` and that one recipient goes to the
transport, which re-streams the content each time (BlobReader.chunks starts anew) and keeps its
connection for the next transaction when the server allows it. Sequential, not parallel: the job
holds one of its destination's connection slots, and the traffic shaping that decides how many
connections a destination gets stays in one place.

Which mail gets VERP: mail whose envelope sender is an address in one of our local domains. Not
the null sender (DSNs, RFC 5321 4.5.5: their bounces must not bounce), and not mail we forward
for someone else (an alias to a remote address keeps the original sender, whose bounces are its
own). The bounce domain is the configured one, else the sender's own domain: a local domain, so
our MX receives the bounce. Only the copy handed to the transport changes; the worker records,
reports and notifies with the original job, so DSNs still go to the real sender.

Exactly once. A split job is many transactions, so it cannot wait for the last one to write
the outcomes: a stop (which cancels the job) or a crash in between would forget the recipients
already delivered, and they would be sent again. Each recipient's outcome goes to `record` (the
worker's write, a one-recipient sub-job whose lease alone it releases) as soon as its
transaction ends, and that write is finished even when a cancellation arrives meanwhile
(`finish_through_cancel`). A split job also takes longer than one transaction, and its recipients
are leased for a fixed time from the claim: once `deadline` (a share of the lease) has passed,
no further transaction starts and the recipients not yet tried are handed back, due at once,
for the next claim — so another worker never takes over recipients that are still being sent.
At least one transaction always runs, so a job always makes progress.

A failure of our own while sending one recipient (a bug, a storage fault) is that recipient's
deferral; the recipients already delivered keep their outcome and are not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from mailprime.delivery.transport import Transport
from mailprime.domain.address import Address
from mailprime.domain.clock import Clock
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.mail import DeliveryJob, QueueRecipient, RecipientOutcome, RecipientStatus
from mailprime.logline import emit
from mailprime.message.verp import VerpCodec
from mailprime.storage.ports import BlobReader, DirectoryStore

log = logging.getLogger("mailprime.delivery")

# Writes the outcomes of a sub-job (one recipient) at once; the worker's record step.
Record = Callable[[DeliveryJob, Sequence[RecipientOutcome]], Awaitable[None]]


async def finish_through_cancel(task: asyncio.Future[Any]) -> bool:
    """Awaits `task` to its end even when the caller is cancelled meanwhile; returns whether it
    was (the caller then re-raises CancelledError once its bookkeeping is done). The task's own
    failure propagates. For writes that record what already happened on the wire: dropping
    them would make the next attempt repeat it."""
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            if not task.done():
                cancelled = True
                continue
        task.result()
        return cancelled


class VerpSplitter:
    def __init__(self, codec: VerpCodec, directory: DirectoryStore, *, bounce_domain: str = "") -> None:
        self.codec = codec
        self.directory = directory
        self.bounce_domain = bounce_domain.lower()
        self.split_jobs = 0  # jobs sent with VERP (for tests and metrics)
        self.handed_back = 0  # recipients handed back at the deadline (for tests and metrics)

    async def bounce_domain_for(self, sender: str) -> str | None:
        """The domain VERP addresses of mail from `sender` use, or None: no VERP for it."""
        if not sender:
            return None
        try:
            addr = Address.parse(sender)
        except InvalidAddress:
            return None
        if not await self.directory.is_local_domain(addr.domain):
            return None
        return self.bounce_domain or addr.domain

    async def senders_for(self, job: DeliveryJob) -> list[str] | None:
        """The VERP sender of each recipient of `job`, in order; None: the job is sent as one
        transaction with its own sender."""
        domain = await self.bounce_domain_for(job.message.sender)
        if domain is None:
            return None
        senders = [self.codec.encode(job.message.id, r.id, domain) for r in job.recipients]
        if any(s is None for s in senders):
            return None
        return [s for s in senders if s is not None]

    async def deliver_each(self, transport: Transport, job: DeliveryJob, senders: Sequence[str],
                           content: BlobReader, record: Record, *, clock: Clock,
                           deadline: datetime) -> tuple[QueueRecipient, ...]:
        """One transaction per recipient, each outcome handed to `record` as soon as it is
        known. Returns the recipients not tried because `deadline` had passed (the caller hands
        them back); empty when every recipient was tried."""
        self.split_jobs += 1
        for index, (rcpt, sender) in enumerate(zip(job.recipients, senders, strict=True)):
            if index and clock.now() >= deadline:
                rest = job.recipients[index:]
                self.handed_back += len(rest)
                emit(log, job.message.id, status="split-deadline", tried=index,
                     handed_back=len(rest))
                return rest
            one = replace(job, message=replace(job.message, return_path=sender), recipients=(rcpt,))
            try:
                outcomes = list(await transport.deliver(one, content))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # this recipient is deferred; the others keep their outcome
                log.exception("%s: delivery to <%s> crashed", job.message.id, rcpt.address)
                outcomes = [RecipientOutcome(rcpt.id, RecipientStatus.PENDING,
                                             f"451 4.3.0 local error: {type(exc).__name__}")]
            # Recorded under the original job's sender (DSNs go to the real sender).
            await record(replace(job, recipients=(rcpt,)), outcomes)
        return ()


__all__ = ["Record", "VerpSplitter", "finish_through_cancel"]
