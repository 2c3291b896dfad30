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

A failure of our own while sending one recipient (a bug, a storage fault) is that recipient's
deferral; the recipients already delivered keep their outcome and are not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from mailprime.delivery.transport import Transport
from mailprime.domain.address import Address
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.mail import DeliveryJob, RecipientOutcome, RecipientStatus
from mailprime.message.verp import VerpCodec
from mailprime.storage.ports import BlobReader, DirectoryStore

log = logging.getLogger("mailprime.delivery")

Deliver = Callable[[DeliveryJob, BlobReader], Awaitable[Sequence[RecipientOutcome]]]


class VerpSplitter:
    def __init__(self, codec: VerpCodec, directory: DirectoryStore, *, bounce_domain: str = "") -> None:
        self.codec = codec
        self.directory = directory
        self.bounce_domain = bounce_domain.lower()
        self.split_jobs = 0  # jobs sent with VERP (for tests and metrics)

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

    def through(self, transport: Transport) -> Deliver:
        """`transport.deliver`, with VERP senders for the jobs that get them."""

        async def deliver(job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
            return await self.deliver(transport, job, content)

        return deliver

    async def deliver(self, transport: Transport, job: DeliveryJob,
                      content: BlobReader) -> list[RecipientOutcome]:
        domain = await self.bounce_domain_for(job.message.sender)
        senders = [self.codec.encode(job.message.id, r.id, domain) if domain else None
                   for r in job.recipients]
        if domain is None or any(s is None for s in senders):
            return list(await transport.deliver(job, content))
        self.split_jobs += 1
        outcomes: list[RecipientOutcome] = []
        for rcpt, sender in zip(job.recipients, senders, strict=True):
            assert sender is not None
            one = replace(job, message=replace(job.message, return_path=sender), recipients=(rcpt,))
            try:
                outcomes.extend(await transport.deliver(one, content))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # this recipient is deferred; the others keep their outcome
                log.exception("%s: delivery to <%s> crashed", job.message.id, rcpt.address)
                outcomes.append(RecipientOutcome(rcpt.id, RecipientStatus.PENDING,
                                                 f"451 4.3.0 local error: {type(exc).__name__}"))
        return outcomes


__all__ = ["Deliver", "VerpSplitter"]
