"""The outbound delivery worker: claims due jobs from the queue and runs them.

Theory of operation. A loop claims due jobs (one message × one destination domain) as leases,
up to the free concurrency, and starts one task per job. A job waits for a slot of its
destination (a per-domain cap on concurrent connections), loads the content, asks the transport,
then turns each transient result into a retry time from the schedule — or EXPIRED once the queue
lifetime is over — and records all outcomes (which appends the events); a job split per
recipient for VERP records each recipient as soon as its transaction ends, and hands back the
ones not tried once half its lease is gone (delivery.verp_split). Then the notifier
(delivery.notifications) sends the RFC 3464 DSNs the outcomes call for: failed, relayed to a
next hop without DSN, or delayed, per the recipients' NOTIFY (RFC 3461). Between rounds the loop
sleeps until woken (new mail queued, `wake()`), the next due time, or the poll interval,
whichever is first. Mail this process has just accepted can skip the claim: the inbound service
asks `direct_lease_owner()` (our owner id, or None when every slot is taken or we are stopping:
then the queue and a later claim take it, as before), the store writes the recipients already
leased to us, and `submit(jobs)` starts them like claimed jobs — they still wait for the
concurrency slots and their destination's cap. `stop()` stops claiming, lets in-flight jobs
finish within a grace period, cancels the rest and hands their leases back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mailprime.delivery.bounce_policy import SyncBounces
from mailprime.delivery.notifications import DEFAULT_DELAY_WARNING, MailInjector, Notifier
from mailprime.delivery.schedule import RetrySchedule
from mailprime.delivery.transport import Transport
from mailprime.delivery.verp_split import VerpSplitter, finish_through_cancel
from mailprime.domain.clock import Clock
from mailprime.domain.mail import (
    DeliveryJob,
    RecipientOutcome,
    RecipientStatus,
)
from mailprime.logline import emit
from mailprime.storage.ports import BlobReader, Store
from mailprime.storage.recent import RecentContent

log = logging.getLogger("mailprime.delivery")

# A split (VERP) job starts no new transaction past this share of its lease: the rest of the
# lease covers the transaction in flight (its command timeouts), so no other worker claims
# recipients that are still being sent (delivery.verp_split).
SPLIT_LEASE_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    hostname: str
    concurrency: int = 50
    # Concurrent jobs per recipient domain; 0: no cap here (the SMTP transport caps connections
    # per provider group, delivery.smtp_transport).
    per_destination: int = 10
    poll_interval: float = 1.0
    lease_seconds: float = 900.0
    owner: str = ""
    # Seconds in the queue before a deferred recipient gets a "delayed" DSN; 0: only recipients
    # that asked NOTIFY=DELAY, at their first deferral (see delivery.notifications).
    delay_warning: float = DEFAULT_DELAY_WARNING


class DeliveryWorker:
    def __init__(self, store: Store, transport: Transport, *, schedule: RetrySchedule, clock: Clock,
                 injector: MailInjector, config: WorkerConfig,
                 recent: RecentContent | None = None, verp: VerpSplitter | None = None,
                 bounces: SyncBounces | None = None) -> None:
        self.store = store
        self.recent = recent  # content of messages this process just accepted
        self.verp = verp  # one transaction per recipient with a VERP sender (delivery.verp_split)
        self.bounces = bounces  # classifies failures, feeds the suppression list (bounce_policy)
        self.transport = transport
        self.schedule = schedule
        self.clock = clock
        self.injector = injector
        self.config = config
        self.notifier = Notifier(store, injector, hostname=config.hostname,
                                 delay_warning=config.delay_warning)
        self.owner = config.owner or f"{platform.node()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._per_domain: defaultdict[str, contextlib.AbstractAsyncContextManager[object]] = (
            defaultdict(lambda: asyncio.Semaphore(config.per_destination))
            if config.per_destination > 0 else defaultdict(contextlib.nullcontext))
        self.claimed_jobs = 0  # jobs taken by claim_due
        self.direct_jobs = 0  # jobs handed over at accept, leased already (no claim)

    async def reclaim_orphaned_leases(self) -> int:
        """Hands back leases held by dead processes of this machine (a SIGKILL or a crash leaves
        them behind; without this their recipients would wait for the lease to expire). Owners
        are "node:pid"; a pid that no longer exists on this node cannot be delivering."""
        node = self.owner.rpartition(":")[0]
        released = 0
        for owner in await self.store.lease_owners():
            owner_node, _, pid = owner.rpartition(":")
            if owner_node != node or not pid.isdigit() or owner == self.owner:
                continue
            if not _pid_alive(int(pid)):
                await self.store.release_leases(owner)
                emit(log, "queue", status="lease-reclaimed", owner=owner)
                released += 1
        return released

    def wake(self) -> None:
        self._wake.set()

    @property
    def lease_seconds(self) -> float:
        return self.config.lease_seconds

    def direct_lease_owner(self) -> str | None:
        """The owner to lease just-accepted recipients to, or None to leave them to the queue:
        while stopping (nobody would run them), or with every concurrency slot busy (they would
        only wait here, leased, while a free worker elsewhere could claim them)."""
        if self._stopping or len(self._tasks) >= self.config.concurrency:
            return None
        return self.owner

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Starts jobs already leased to us (by the accept that wrote them). Several sessions
        may have asked `direct_lease_owner()` at once, so this can run past `concurrency` by a
        few tasks: those wait for a slot, and the claim loop takes nothing until tasks end."""
        if self._stopping:  # stop() hands our leases back; the queue keeps them
            return
        for job in jobs:
            self._start(job)
        self.direct_jobs += len(jobs)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        await self.reclaim_orphaned_leases()
        while not self._stopping:
            started = await self._claim_round()
            if started:
                continue
            await self._sleep_until_due()

    async def _claim_round(self) -> int:
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            return 1
        jobs = await self.store.claim_due(self.clock.now(), free, self.owner,
                                          self.config.lease_seconds)
        for job in jobs:
            self._start(job)
        self.claimed_jobs += len(jobs)
        return len(jobs)

    def _start(self, job: DeliveryJob) -> None:
        # The lease runs from (about) now: the claim or the accept that leased the job.
        task = asyncio.create_task(self._run_job(job, self.clock.now()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep_until_due(self) -> None:
        timeout = self.config.poll_interval
        due = await self.store.next_due_at()
        if due is not None:
            timeout = max(0.0, min(timeout, (due - self.clock.now()).total_seconds()))
        self._wake.clear()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def run_until_idle(self, max_rounds: int = 1000) -> None:
        """Claims and delivers everything due now, then returns (CLI `queue flush`, tests)."""
        for _ in range(max_rounds):
            started = await self._claim_round()
            if not started and not self._tasks:
                return
            if not started:
                await asyncio.wait(set(self._tasks))

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.store.release_leases(self.owner)
        await self.transport.close()

    # One job -------------------------------------------------------------------------------
    async def _run_job(self, job: DeliveryJob, leased_at: datetime) -> None:
        async with self._slots, self._per_domain[job.domain]:
            started = time.monotonic()
            # Outcomes written so far. A split (VERP) job writes each recipient's as soon as
            # its transaction ends; whatever was written is reported once, here, even when the
            # job is cancelled (stop) half-way.
            recorded: list[RecipientOutcome] = []
            try:
                outcomes = await self._attempt(job, leased_at, started, recorded)
                if outcomes is not None:
                    await self._record(job, outcomes, started, recorded)
            finally:
                if recorded:
                    await self._after_recorded(job, recorded)

    async def _attempt(self, job: DeliveryJob, leased_at: datetime, started: float,
                       recorded: list[RecipientOutcome]) -> list[RecipientOutcome] | None:
        """The attempt's outcomes to record, or None when a split job recorded its own."""
        try:
            # Streamed from the store (the spool file stays open for the whole attempt).
            cached = self.recent.get(job.message.id) if self.recent is not None else None
            if cached is not None:
                return await self._deliver(job, cached, leased_at, started, recorded)
            async with self.store.open_blob(job.message.blob_id) as content:
                return await self._deliver(job, content, leased_at, started, recorded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or storage fault must not lose the job
            log.exception("%s: delivery attempt crashed", job.message.id)
            done = {o.recipient_id for o in recorded}
            return [RecipientOutcome(r.id, RecipientStatus.PENDING,
                                     f"451 4.3.0 local error: {type(exc).__name__}")
                    for r in job.recipients if r.id not in done]

    async def _deliver(self, job: DeliveryJob, content: BlobReader, leased_at: datetime,
                       started: float,
                       recorded: list[RecipientOutcome]) -> list[RecipientOutcome] | None:
        senders = await self.verp.senders_for(job) if self.verp is not None else None
        if self.verp is None or senders is None:
            return list(await self.transport.deliver(job, content))

        async def record(one: DeliveryJob, outcomes: Sequence[RecipientOutcome]) -> None:
            await self._record(one, list(outcomes), started, recorded)

        deadline = leased_at + timedelta(seconds=self.config.lease_seconds * SPLIT_LEASE_SHARE)
        rest = await self.verp.deliver_each(self.transport, job, senders, content, record,
                                            clock=self.clock, deadline=deadline)
        # Handed back unleased, due as they were: the next claim takes them.
        if rest and await finish_through_cancel(asyncio.ensure_future(
                self.store.record_outcomes(replace(job, recipients=rest), [], self.clock.now()))):
            raise asyncio.CancelledError
        return None

    async def _record(self, job: DeliveryJob, outcomes: list[RecipientOutcome], started: float,
                      recorded: list[RecipientOutcome]) -> None:
        """Schedules retries, classifies, writes `job`'s outcomes (releasing only its
        recipients' leases) and adds them to `recorded`. The write runs to its end even when
        the job is cancelled meanwhile: it records what already happened on the wire."""
        outcomes = self._schedule_retries(job, outcomes)
        if self.bounces is not None:  # the events record_outcomes appends carry the class
            outcomes = self.bounces.annotate(job, outcomes)
        cancelled = await finish_through_cancel(asyncio.ensure_future(
            self.store.record_outcomes(job, outcomes, self.clock.now())))
        recorded.extend(outcomes)
        self._log(job, outcomes, time.monotonic() - started)
        if cancelled:
            raise asyncio.CancelledError

    async def _after_recorded(self, job: DeliveryJob, outcomes: list[RecipientOutcome]) -> None:
        """The bounce policy and the DSNs, once per attempt for all its recorded outcomes."""
        if self.bounces is not None:
            try:
                await self.bounces.after_recorded(job, outcomes)
            except asyncio.CancelledError:
                raise
            except Exception:  # recorded already; a lost suppression must not kill the task
                log.exception("%s: applying the bounce policy failed", job.message.id)
        try:
            await self.notifier.after_attempt(job, outcomes, self.clock.now())
        except asyncio.CancelledError:
            raise
        except Exception:  # the outcomes are recorded; a lost report must not kill the task
            log.exception("%s: sending the delivery status notification failed",
                          job.message.id)

    def _schedule_retries(self, job: DeliveryJob,
                          outcomes: list[RecipientOutcome]) -> list[RecipientOutcome]:
        now = self.clock.now()
        by_id = {r.id: r for r in job.recipients}
        result = []
        for outcome in outcomes:
            scheduled = outcome
            if outcome.status is RecipientStatus.PENDING and outcome.next_attempt_at is None:
                rcpt = by_id[outcome.recipient_id]
                when = self.schedule.next_attempt(rcpt.attempts + 1, now, job.message.created_at)
                if when is None:
                    scheduled = replace(outcome, status=RecipientStatus.EXPIRED)
                else:
                    scheduled = replace(outcome, next_attempt_at=when)
            result.append(scheduled)
        return result

    def _log(self, job: DeliveryJob, outcomes: Sequence[RecipientOutcome], attempt_s: float) -> None:
        """One line per recipient and attempt, like Postfix's smtp(8): `delay` is the time since
        the message arrived, `attempt_s` how long this attempt took."""
        by_id = {r.id: r for r in job.recipients}
        delay = (self.clock.now() - job.message.created_at).total_seconds()
        for outcome in outcomes:
            rcpt = by_id[outcome.recipient_id]
            status = {RecipientStatus.PENDING: "deferred"}.get(outcome.status, outcome.status.value)
            emit(log, job.message.id, to=f"<{rcpt.address}>", relay=outcome.remote_host or "none",
                 delay=round(delay, 2), attempt_s=round(attempt_s, 3), attempts=rcpt.attempts + 1,
                 status=status, reply=outcome.reply)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
