"""Delivery over SMTP to the recipient domain's MX hosts, shaped per provider group.

Theory of operation. For a job (one message, one destination domain):

1. Routes. The router gives the ordered routes (MX hosts by preference, each resolved to
   addresses, each with the TLS it demands); `RouteCache` keeps them briefly, so the grouping
   below and the delivery share one look-up. The message's RFC 8689 flags then adjust that TLS
   (delivery.requiretls: REQUIRETLS verifies every route and, when every route reached fails
   it, returns the message; "TLS-Required: No" drops it).
2. Group. `ProviderTable` names the provider group from the most preferred MX host
   (delivery.provider_groups): every budget below is the group's, so domains on one provider
   share it.
3. Shaping (delivery.shaping). A paused group (it answered with throttling replies) defers the
   job at once to the pause's end, with no SMTP attempt and no slot held: "451 4.7.0 throttled
   by <group>, resuming at <time>". Then the source address: the job's IP pool (by sender
   domain or message class, delivery.ip_pools) and, among its addresses, one under its warm-up
   cap for today; with all capped the job is deferred to the next UTC day. Then the rate: the
   shaper reserves the group's next send slot, and the job sleeps until it if that is within
   `hold_seconds`, or is deferred to it.
4. Connection (delivery.connection_pool): an idle connection of the group, from the same source
   address, to one of the job's MX hosts with TLS at least as strict as the route demands — so
   one connection to gmail-smtp-in.l.google.com carries mail for many Workspace domains, one
   transaction per job — or a new one within the group's connection cap. A group that got
   paused while the job waited defers it now.
5. Transaction. A reused connection that fails is closed and the routes are dialled in order
   until one gives a transaction result: a connect failure, a TLS failure or a 4xx greeting or
   MAIL reply moves on to the next route (RFC 5321 5.1) — unless the reply is a throttling one
   (421, 4.7.x, delivery.shaping.is_throttle_reply): that pauses the group and ends the attempt,
   since the next MX of the same provider would only be asked the same. Any other answer is
   final. In RCPT or DATA replies only a 421 or a provider's rate-limit code pauses the group:
   a greylisting 450 4.7.1 there concerns one recipient and is left to the retry schedule.
   With REQUIRETLS, only a TLS verdict on the host (STARTTLS missing, a certificate that does
   not verify) counts towards returning the message; a handshake timeout is transient. A
   connection that finished cleanly goes back to the pool until it has carried the group's
   messages per connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailprime.delivery.connection_pool import ConnectionPool, Pooled
from mailprime.delivery.ip_pools import IpPool, PoolSelector, Reservation, WarmupCounter
from mailprime.delivery.provider_groups import BUILTIN_PROVIDERS, ProviderTable, RouteCache
from mailprime.delivery.requiretls import (
    RequireTlsTally,
    denies_tls,
    refuses_requiretls,
    routes_for,
)
from mailprime.delivery.router import Route, Router, RoutingError
from mailprime.delivery.shaping import GroupLimits, Shaper, Stage, is_throttle_reply
from mailprime.delivery.tls_reports import TlsFailure
from mailprime.delivery.transport import (
    DeliveryError,
    Dialer,
    OutboundConnection,
    OutboundRecipient,
    TlsRequirement,
    TransactionReplies,
)
from mailprime.domain.clock import Clock, SystemClock
from mailprime.domain.mail import DeliveryJob, RecipientOutcome, RecipientStatus
from mailprime.logline import emit
from mailprime.proto.smtp.types import Reply
from mailprime.storage.ports import BlobReader

log = logging.getLogger("mailprime.delivery")

DEFAULT_LIMITS = GroupLimits(connections=10, messages_per_connection=100, messages_per_minute=0)


@dataclass(frozen=True, slots=True)
class Shaping:
    """What the transport shapes with; runtime builds it from [shaping]."""

    providers: ProviderTable
    shaper: Shaper
    pools: PoolSelector | None = None
    warmup: WarmupCounter | None = None  # with pools: caps, counts and the address choice

    @classmethod
    def default(cls) -> Shaping:
        providers = ProviderTable(BUILTIN_PROVIDERS, DEFAULT_LIMITS)
        return cls(providers, Shaper(providers.limits))


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


def _tls_covers(have: TlsRequirement | None, want: TlsRequirement | None) -> bool:
    """A connection opened under `have` may serve a route demanding `want`: enforced, verified
    TLS serves everything, anything serves a route without a verification demand. A testing-mode
    connection (not enforced) may have fallen back to unverified TLS, so it serves no demand."""
    return (want is None or not want.verify
            or (have is not None and have.verify and have.enforce))


def _fits(routes: Sequence[Route]) -> Callable[[Pooled], bool]:
    def fits(item: Pooled) -> bool:
        return any(r.mx_host == item.route.mx_host and _tls_covers(item.route.tls, r.tls)
                   for r in routes)
    return fits


@dataclass(frozen=True, slots=True)
class _Attempt:
    outcomes: list[RecipientOutcome] | None  # None: try the next route
    keep: bool = False  # the connection may carry another transaction
    sent: bool = False  # the message content went to the server (warm-up counts it)
    requiretls_refused: bool = False  # RFC 8689: the hop does not offer REQUIRETLS


class SmtpTransport:
    def __init__(self, router: Router, dialer: Dialer, *, port: int = 25,
                 shaping: Shaping | None = None, clock: Clock | None = None,
                 route_cache_seconds: float = 60.0, pool: ConnectionPool | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.routes = RouteCache(router, ttl=route_cache_seconds, monotonic=monotonic)
        self.dialer = dialer
        self.port = port
        self.shaping = shaping or Shaping.default()
        self.shaper = self.shaping.shaper
        self.clock = clock or SystemClock()
        self.pool = pool or ConnectionPool(monotonic=monotonic)
        self._mono = monotonic
        self._turn = itertools.count()  # round robin over a pool without a warm-up counter

    async def deliver(self, job: DeliveryJob, content: BlobReader) -> Sequence[RecipientOutcome]:
        try:
            # RFC 8689: REQUIRETLS makes every route verified TLS; "TLS-Required: No" drops
            # what MTA-STS demanded (delivery.requiretls).
            routes = routes_for(job.message, await self.routes.route(job.domain))
        except RoutingError as exc:
            status = RecipientStatus.PENDING if exc.transient else RecipientStatus.BOUNCED
            return _all(job, status, exc.one_line())
        group = self.shaping.providers.group_of(routes)
        paused = self.shaper.paused_until(group)
        if paused is not None:
            return self._deferred(job, paused, f"throttled by {group}")
        fits = _fits(routes)
        pool = self.shaping.pools.choose(job.message.sender, job.message.priority) \
            if self.shaping.pools is not None else None
        source: str | None = None
        reservation: Reservation | None = None
        if pool is not None:
            reservation, source = await self._source(job, pool, group, fits)
            if source is None:
                return self._deferred_to(
                    job, self._next_day(),
                    f"warm-up caps of every address of pool {pool.name} reached today")
        sent = False
        try:
            admission = self.shaper.admit(group)
            if admission.defer_until is not None:
                why = (f"throttled by {group}" if admission.reason == "paused" else
                       f"rate limit of {group} ({self.shaper.snapshot(group).rate:g}/min) reached")
                return self._deferred(job, admission.defer_until, why)
            if admission.wait > 0:
                await asyncio.sleep(admission.wait)
            outcomes, sent = await self._send(job, content, routes, group=group, source=source,
                                              fits=fits)
            return outcomes
        finally:
            if reservation is not None and self.shaping.warmup is not None:
                if sent:
                    self.shaping.warmup.commit(reservation)
                else:
                    self.shaping.warmup.release(reservation)

    async def _source(self, job: DeliveryJob, pool: IpPool, group: str,
                      fits: Callable[[Pooled], bool]) -> tuple[Reservation | None, str | None]:
        """The pool's address for this job (and its warm-up reservation); None: all capped."""
        if self.shaping.warmup is None:
            return None, pool.addresses[next(self._turn) % len(pool.addresses)]
        prefer = {s for s in self.pool.idle_sources(group, fits) if s is not None}
        reservation = await self.shaping.warmup.acquire(pool.addresses, len(job.recipients),
                                                        prefer)
        return reservation, reservation.address if reservation is not None else None

    async def _send(self, job: DeliveryJob, content: BlobReader, routes: Sequence[Route], *,
                    group: str, source: str | None,
                    fits: Callable[[Pooled], bool]) -> tuple[list[RecipientOutcome], bool]:
        """The connection and the transaction; (outcomes, whether the content was sent)."""
        limits = self.shaper.limits(group)
        recipients = [OutboundRecipient(r.address, tuple(sorted(r.notify)), r.orcpt)
                      for r in job.recipients]
        item = await self.pool.acquire(group, source, fits, limits.connections)
        # From here one of the group's connections (`item`, or a slot for a new one) is ours
        # until _finish, release or abandon hands it back; `held` says it still is.
        held = True
        try:
            paused = self.shaper.paused_until(group)  # a reply to another job may have paused it
            if paused is not None:
                if item is not None:
                    held = False
                    await self.pool.release(item, max_transactions=limits.messages_per_connection)
                return self._deferred(job, paused, f"throttled by {group}"), False
            if item is not None:
                attempt = await self._try(job, item, recipients, content, group)
                if attempt.outcomes is not None:
                    held = False
                    await self._finish(item, attempt, limits)
                    return attempt.outcomes, attempt.sent
                await self.pool.discard(item)  # stale or refused: its slot serves a new one
                item = None
            last_error = "no route tried"
            tally = RequireTlsTally(job.domain) if job.message.require_tls else None
            for route in routes:
                where = f"{route.host}[{route.ip}]:{self.port}"
                if tally is not None:
                    tally.attempt()
                try:
                    conn = await self._dial(route, source)
                except DeliveryError as exc:
                    # Only a TLS verdict on the host counts; a handshake timeout stays transient.
                    if tally is not None and isinstance(exc, TlsFailure) and denies_tls(exc):
                        tally.no_tls(where, _bare_reason(exc.reason))
                    if exc.reply is not None and is_throttle_reply(  # 421 greeting, 4.7.x EHLO
                            exc.reply, stage=Stage.CONNECT):
                        self.shaper.throttled(group, exc.reply.one_line())
                        return _all(job, RecipientStatus.PENDING, exc.reply.one_line(), where), False
                    last_error = f"connect to {where}: {_bare_reason(exc.reason)}"
                    emit(log, job.message.id, logging.INFO, relay=where, status="connect-failed",
                         reason=exc.reason)
                    continue
                item = self.pool.connected(group, source, route, conn)
                attempt = await self._try(job, item, recipients, content, group)
                if attempt.outcomes is not None:
                    held = False
                    await self._finish(item, attempt, limits)
                    return attempt.outcomes, attempt.sent
                await self.pool.discard(item)
                item = None
                last_error = f"{where}: transient failure before the transaction completed"
                if tally is not None and attempt.requiretls_refused:
                    tally.not_offered(where)
                    last_error = f"{where} does not offer REQUIRETLS"
            final = tally.final() if tally is not None else None
            if final is not None:  # RFC 8689 4.2.1: no MX meets the requirement: returned
                return _all(job, RecipientStatus.BOUNCED, final.one_line()), False
            return _all(job, RecipientStatus.PENDING, f"451 4.4.1 {last_error}"), False
        finally:
            if held:  # deferred, failed everywhere, or cancelled mid-way
                if item is not None:
                    await self.pool.discard(item)
                self.pool.abandon(group)

    async def _dial(self, route: Route, source: str | None) -> OutboundConnection:
        return await self.dialer.connect(route.ip, self.port, server_name=route.host,
                                         source_ip=source, tls=route.tls)

    async def _finish(self, item: Pooled, attempt: _Attempt, limits: GroupLimits) -> None:
        if attempt.keep:
            await self.pool.release(item, max_transactions=limits.messages_per_connection)
        else:
            await self.pool.discard(item)
            self.pool.abandon(item.group)

    async def _try(self, job: DeliveryJob, item: Pooled, recipients: list[OutboundRecipient],
                   content: BlobReader, group: str) -> _Attempt:
        """One transaction on one connection."""
        conn = item.conn
        try:
            replies = await conn.transact(job.message.wire_sender, recipients, content,
                                          smtputf8=job.message.smtputf8, ret=job.message.dsn_ret,
                                          envid=job.message.dsn_envid,
                                          body_8bit=job.message.body_8bit,
                                          require_tls=job.message.require_tls)
        except DeliveryError as exc:
            # 421 mid-session (a session failure: the sender's, like MAIL's)
            if exc.reply is not None and is_throttle_reply(exc.reply, stage=Stage.MAIL):
                self.shaper.throttled(group, exc.reply.one_line())
                return _Attempt(_all(job, RecipientStatus.PENDING, exc.reply.one_line(),
                                     conn.description))
            if not exc.transient:
                return _Attempt(_all(job, RecipientStatus.BOUNCED,
                                     f"550 {exc.enhanced} {exc.reason}", conn.description))
            return _Attempt(None)
        item.transactions += 1
        # Each reply judged by its stage: a greylisting RCPT (or DATA) reply is no throttle.
        staged = ((replies.mail, Stage.MAIL), *((r, Stage.RCPT) for r in replies.rcpts),
                  (replies.data, Stage.DATA))
        throttle = next((r for r, stage in staged
                         if r is not None and is_throttle_reply(r, stage=stage)), None)
        if throttle is not None:
            self.shaper.throttled(group, throttle.one_line())
        if job.message.require_tls and refuses_requiretls(replies):
            return _Attempt(None, requiretls_refused=True)  # RFC 8689 4.2.1: the next MX
        if replies.mail.is_transient:
            if throttle is replies.mail:  # the provider says slow down: not the next MX either
                return _Attempt(_all(job, RecipientStatus.PENDING, replies.mail.one_line(),
                                     conn.description))
            return _Attempt(None)
        return _Attempt(outcomes_from_replies(job, replies, conn.description), keep=True,
                        sent=replies.data is not None)

    # Deferrals without an attempt ------------------------------------------------------------
    def _deferred(self, job: DeliveryJob, until: float, why: str) -> list[RecipientOutcome]:
        """Deferred to the monotonic time `until` (the shaper's clock)."""
        at = self.clock.now() + timedelta(seconds=max(0.0, until - self._mono()))
        return self._deferred_to(job, at, why)

    def _deferred_to(self, job: DeliveryJob, at: datetime, why: str) -> list[RecipientOutcome]:
        reply = f"451 4.7.0 {why}, resuming at {at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        # Past the message's lifetime the retry schedule decides (and expires it).
        when = at if at < job.message.expires_at else None
        return [RecipientOutcome(r.id, RecipientStatus.PENDING, reply, next_attempt_at=when)
                for r in job.recipients]

    def _next_day(self) -> datetime:
        assert self.shaping.warmup is not None
        return self.shaping.warmup.next_day()

    async def close(self) -> None:
        await self.pool.close()
        if self.shaping.warmup is not None:
            await self.shaping.warmup.sync()
