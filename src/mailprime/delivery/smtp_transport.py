"""Delivery over SMTP to the recipient domain's MX hosts, with connection reuse.

Theory of operation. For a job (one message, one destination domain) the transport asks the
router for the ordered routes (MX hosts by preference, each resolved to addresses), then tries
them in order until one gives a transaction result: a connect failure, a TLS failure or a 4xx
greeting/MAIL reply moves on to the next route (RFC 5321 5.1); any other answer is final for this
attempt. A connection that finished a transaction cleanly goes back to a small per-destination
pool and is reused for the next job to the same domain (RFC 5321 allows many transactions per
session), which is what makes bulk relaying to one provider fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mailprime.delivery.router import Router, RoutingError
from mailprime.delivery.transport import (
    DeliveryError,
    Dialer,
    OutboundConnection,
    OutboundRecipient,
    TransactionReplies,
)
from mailprime.domain.mail import DeliveryJob, RecipientOutcome, RecipientStatus
from mailprime.logline import emit
from mailprime.proto.smtp.types import Reply
from mailprime.storage.ports import BlobReader

log = logging.getLogger("mailprime.delivery")


@dataclass(slots=True)
class _Pooled:
    conn: OutboundConnection
    idle_since: float
    transactions: int


class ConnectionPool:
    """Idle connections per destination domain, each reused for a bounded number of messages."""

    def __init__(self, *, idle_seconds: float = 5.0, max_transactions: int = 100,
                 max_idle_per_domain: int = 20) -> None:
        self.idle_seconds = idle_seconds
        self.max_transactions = max_transactions
        self.max_idle_per_domain = max_idle_per_domain
        self._idle: dict[str, list[_Pooled]] = defaultdict(list)

    def take(self, domain: str) -> _Pooled | None:
        idle = self._idle.get(domain)
        now = time.monotonic()
        while idle:
            item = idle.pop()
            if now - item.idle_since <= self.idle_seconds and item.conn.is_usable():
                return item
            asyncio.get_running_loop().create_task(item.conn.close())
        return None

    async def give_back(self, domain: str, item: _Pooled) -> None:
        idle = self._idle[domain]
        if (item.transactions >= self.max_transactions or not item.conn.is_usable()
                or len(idle) >= self.max_idle_per_domain):
            await item.conn.close()
            return
        item.idle_since = time.monotonic()
        idle.append(item)

    async def close_expired(self) -> None:
        now = time.monotonic()
        for domain, idle in list(self._idle.items()):
            keep = [i for i in idle if now - i.idle_since <= self.idle_seconds]
            for item in idle:
                if item not in keep:
                    await item.conn.close()
            self._idle[domain] = keep

    async def close(self) -> None:
        for idle in self._idle.values():
            for item in idle:
                await item.conn.close()
        self._idle.clear()


def outcomes_from_replies(job: DeliveryJob, replies: TransactionReplies,
                          remote: str) -> list[RecipientOutcome]:
    """Per-recipient results of one transaction: MAIL failure applies to all; a RCPT failure to
    that recipient; otherwise the DATA (or last BDAT) reply."""
    out = []
    for rcpt, rcpt_reply in zip(job.recipients, replies.rcpts, strict=True):
        reply: Reply
        if not replies.mail.is_positive:
            reply = replies.mail
        elif not rcpt_reply.is_positive:
            reply = rcpt_reply
        elif replies.data is None:
            reply = Reply(451, "no DATA reply", "4.4.2")
        else:
            reply = replies.data
        if reply.is_positive:
            status = RecipientStatus.DELIVERED
        elif reply.is_permanent:
            status = RecipientStatus.BOUNCED
        else:
            status = RecipientStatus.PENDING
        out.append(RecipientOutcome(rcpt.id, status, reply.one_line(), remote_host=remote,
                                    remote_dsn=replies.dsn))
    return out


def _bare_reason(reason: str) -> str:
    """"Connection refused" from the dialer's "connect to 192.0.2.1:25: Connection refused": the
    reply we record already names the host by MX name and address, as Postfix's does."""
    if reason.startswith("connect to ") and ": " in reason:
        return reason.split(": ", 1)[1]
    return reason


def _all(job: DeliveryJob, status: RecipientStatus, reason: str, remote: str = "") -> list[RecipientOutcome]:
    return [RecipientOutcome(r.id, status, reason, remote_host=remote) for r in job.recipients]


class SmtpTransport:
    def __init__(self, router: Router, dialer: Dialer, *, port: int = 25,
                 pool: ConnectionPool | None = None) -> None:
        self.router = router
        self.dialer = dialer
        self.port = port
        self.pool = pool or ConnectionPool()

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        recipients = [OutboundRecipient(r.address, tuple(sorted(r.notify)), r.orcpt)
                      for r in job.recipients]
        last_error = "no route tried"
        pooled = self.pool.take(job.domain)
        if pooled is not None:
            result = await self._try(job, pooled, recipients, content)
            if result is not None:
                return result
        try:
            routes = await self.router.route(job.domain)
        except RoutingError as exc:
            status = RecipientStatus.PENDING if exc.transient else RecipientStatus.BOUNCED
            return _all(job, status, exc.one_line())
        for route in routes:
            where = f"{route.host}[{route.ip}]:{self.port}"
            try:
                conn = await self.dialer.connect(route.ip, self.port, server_name=route.host)
            except DeliveryError as exc:
                last_error = f"connect to {where}: {_bare_reason(exc.reason)}"
                emit(log, job.message.id, logging.INFO, relay=where, status="connect-failed",
                     reason=exc.reason)
                continue
            result = await self._try(job, _Pooled(conn, time.monotonic(), 0), recipients, content)
            if result is not None:
                return result
            last_error = f"{where}: transient failure before the transaction completed"
        return _all(job, RecipientStatus.PENDING, f"451 4.4.1 {last_error}")

    async def _try(self, job: DeliveryJob, pooled: _Pooled, recipients: list[OutboundRecipient],
                   content: BlobReader) -> list[RecipientOutcome] | None:
        """One transaction on one connection; None means "try the next route"."""
        conn = pooled.conn
        try:
            replies = await conn.transact(job.message.sender, recipients, content,
                                          smtputf8=job.message.smtputf8, ret=job.message.dsn_ret,
                                          envid=job.message.dsn_envid,
                                          body_8bit=job.message.body_8bit)
        except DeliveryError as exc:
            await conn.close()
            if not exc.transient:
                return _all(job, RecipientStatus.BOUNCED, f"550 {exc.enhanced} {exc.reason}",
                            conn.description)
            return None
        pooled.transactions += 1
        if replies.mail.is_transient:
            await conn.close()
            return None
        await self.pool.give_back(job.domain, pooled)
        return outcomes_from_replies(job, replies, conn.description)

    async def close(self) -> None:
        await self.pool.close()
