"""Campaign dispatch: every contact of a sending campaign gets its message exactly once.

Theory of operation
-------------------
A `Dispatcher` runs one campaign in state sending until it is sent, paused (by an operator
or a guardrail) or cancelled. It prepares once — the template compiled once (with the campaign's
subject override), one MessageBuilder, the signed unsubscribe links, the tracking rewrite when
the campaign tracks opens or clicks (marketing.link_rewriter) — and then walks the audience
(AudienceStore.audience: confirmed members of the lists, the segment, never a suppressed
address) in keyset batches from the campaign's saved cursor, so memory is bounded by the
batches in hand (two) and a resumed campaign does not read again what it has done.

Per batch: the gate (SendGate.check_many) is asked again, for the whole batch in one read — the
page was read a moment ago, and an unsubscribe or a suppression may have landed since; a
refusal becomes a `skipped` send row with the gate's reason. An allowed contact's message is
built and DKIM-signed (a template error for this contact is a `failed` row, and the campaign
goes on): in this process, on the event loop with the signatures on `sign_threads` threads
(marketing.threaded_build), or by worker processes (below).

With worker processes (`build_processes`, marketing.build_pool) a batch of at least POOL_MIN
contacts is built and signed there instead, CHUNK contacts a job, the loop only handing out
and collecting: that is the part of a campaign message that is pure CPU, and one process runs
Python on one core. The walk then makes two batches ahead of the one being written, so that
the workers always have jobs queued while this process reads, gates and writes.

Exactly once. The rule: a contact gets a queue message only through its send row's queue id.

Without a rate (a newsletter's usual case) a batch is written in ONE transaction
(Store.queue_sends): its rows, the allowed contacts' already `queued` with a queue id chosen
now, their messages under those ids, and the cursor past the batch; all or none, so a crash
leaves either the whole batch or nothing of it, and the next run walks on from the cursor. If a
contact of the batch already has a row (an earlier run's pending row, another process's), or a
queue id is taken, nothing is written and the batch goes through the three steps below, which
sort it out contact by contact. With a rate, the accepts must wait for their tokens, so the
three steps are the only way:

1. The batch's rows are written first, durably, `pending` with a queue id chosen now
   (UNIQUE(campaign, contact): a contact that already has a row, from an earlier run or another
   process, keeps it, and we see that its queue id is not ours).
2. The messages are accepted under those queue ids (the queue's primary key: a second accept of
   the same id fails, it cannot make a second message), a whole chunk in one transaction
   (Store.accept_many: all or none; if a chunk fails, its messages are accepted one by one, so
   the one whose id is taken fails alone).
3. The rows become `queued`.

A crash (or a cancelled task: the group commit may still commit an accept whose caller is gone)
between 1 and 3 leaves pending rows. Each run starts by reconciling them: a queue id the store
has accepted (the message is queued, or its QUEUED event — written in the accept's transaction —
is there after the message was delivered and cleaned up) becomes queued; one it has not is
accepted now, under the same id. So whatever moment the process dies at, a contact has at most
one message, and a resumed run gives the missing ones theirs.

Pipeline: while one batch is written (one transaction, or steps 1-3: mostly waiting for the
disk), the next is gated, built and signed (the next two with worker processes). Batches are
written one at a time and in order, so the saved cursor only moves past contacts whose rows are
settled, and memory holds two batches (three with worker processes).

Between batches (`_checkpoint`, once a batch is written and before the next is): the campaign
row is read again (an operator's pause or cancel stops the run there), the lease on the campaign is renewed
(several processes poll for sending campaigns; the lease keeps one dispatcher per campaign, and a
dead process's lease runs out), and, at most every `guardrail_interval` seconds, the guardrails
read the counters and may pause the campaign (marketing.guardrails).

Rate: a token bucket (messages per minute, one second's worth of burst) in front of every
accept, on an injectable monotonic clock and sleep, so tests need no real time. A batch is cut
to about ten seconds of sending at the campaign's rate, so a pause is never long in coming, and
its accepts go out a second's worth at a time as the tokens come (no limit: one chunk a batch).

Test sends (`test_send`) build the same message for given addresses (a stored contact's data
when the address is one) with "[Test]" before the subject, queue them, and record no send rows:
they are not the campaign's sends and do not count. They ask the gate too (suppressions only:
the addresses are the operator's, not the list's): with a suppressed address among them nothing
is sent, and the error names each refused address and why.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Protocol

from mailprime.domain.audience import Addressee, Contact, MailingList, SegmentFilter
from mailprime.domain.campaigns import (
    Campaign,
    CampaignError,
    CampaignStatus,
    SendRecord,
    SendStatus,
)
from mailprime.domain.clock import Clock
from mailprime.domain.errors import DomainError, StorageError
from mailprime.domain.ids import CampaignId, ContactId, ListId, QueueId, new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient, Priority
from mailprime.logline import emit
from mailprime.marketing.build_pool import BuildPool, BuildSpec
from mailprime.marketing.gate import Purpose, SendGate
from mailprime.marketing.guardrails import GuardrailPolicy, evaluate
from mailprime.marketing.message_builder import CampaignInfo, HeaderError, MessageBuilder
from mailprime.marketing.rate import Monotonic, Sleep, TokenBucket
from mailprime.marketing.segments import parse_segment
from mailprime.marketing.templates import (
    Recipient,
    RenderError,
    TemplateError,
)
from mailprime.marketing.threaded_build import DeferredSigner, ThreadedBuild, reap
from mailprime.marketing.tokens import TokenSigner
from mailprime.storage.ports import Store

log = logging.getLogger("mailprime.campaigns")

S = CampaignStatus
TEST_PREFIX = "[Test] "
BATCH_SECONDS = 10.0  # a batch is cut to about this much sending at the campaign's rate
MAX_TEST_ADDRESSES = 20
# Recipients from which a batch goes to the worker processes (when configured): below, starting
# processes (~0.5 s) costs more than it saves.
POOL_MIN = 100
BUILD_ATTEMPTS = 2  # tries of a batch whose build worker died, before the campaign pauses

Update = tuple[ContactId, SendStatus, str, str]  # a settle_sends entry


class MessageSigner(DeferredSigner, Protocol):
    """DKIM signing (services.dkim_keys.DkimSigner, wired by the runtime and the CLI): at
    once, or in two steps (DeferredSigner)."""

    async def sign(self, message: bytes) -> bytes: ...

    async def key_material(self, domain: str) -> tuple[tuple[str, str, str], ...]:
        """(domain, selector, PEM) of the domain's signing keys, for the worker processes."""
        ...


class DispatchError(CampaignError):
    """The campaign cannot be sent as it stands (template gone, no list, bad link base)."""


class LeaseLost(DomainError):
    """Another process holds the campaign: this run stops without touching it."""


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    base_url: str  # [http] public_url: where the links in the mail point (https for RFC 8058)
    owner: str = "mailprime"  # this process, for the campaign lease
    batch_size: int = 500
    lease_seconds: float = 60.0
    guardrails: GuardrailPolicy = field(default_factory=GuardrailPolicy)
    guardrail_interval: float = 5.0  # seconds between two reads of the counters
    sign_threads: int = 2  # DKIM signing threads beside the event loop (about one per core)
    # Worker processes that build and sign (marketing.build_pool); 0: none, the event loop
    # builds and `sign_threads` sign. Used for batches of at least POOL_MIN recipients.
    build_processes: int = 0


@dataclass(slots=True)
class _Prepared:
    campaign: Campaign
    builder: MessageBuilder  # in this process: test sends, reconciling, small batches
    spec: BuildSpec  # the same for the worker processes
    segment: SegmentFilter | None
    lists: tuple[MailingList, ...]
    bucket: TokenBucket


@dataclass(slots=True)
class _Batch:
    """One page of the audience gated, built and signed: its send rows (skipped, failed and
    pending) and, per pending contact, (its queue id, the signed message, SMTPUTF8)."""

    contacts: Sequence[Addressee | Contact]
    rows: list[SendRecord]
    built: dict[ContactId, tuple[QueueId, bytes, bool]]


class Dispatcher:
    def __init__(self, store: Store, signer: MessageSigner, tokens: TokenSigner,
                 config: DispatchConfig, *, clock: Clock, monotonic: Monotonic = time.monotonic,
                 sleep: Sleep = asyncio.sleep, on_queued: Callable[[], None] | None = None,
                 builders: BuildPool | None = None) -> None:
        """`builders`: a pool shared with other dispatchers (the server's, closed by its
        owner); without one, a pool of `config.build_processes` is started when needed and
        closed at the end of each run."""
        self.store = store
        self.signer = signer
        self.tokens = tokens
        self.config = config
        self.clock = clock
        self.gate = SendGate(store)
        self._monotonic = monotonic
        self._sleep = sleep
        self._on_queued = on_queued
        self._last_guard = float("-inf")
        self._threads: ThreadedBuild | None = None
        self._builders: BuildPool | None = builders
        self._owns_builders = builders is None
        # The build workers' CPU and peak resident sets added up (kB), read as their pool
        # closes: the campaign bench counts them with this process's own.
        self.builders_cpu_seconds = 0.0
        self.builders_peak_rss_kb = 0

    # ---- preparing -------------------------------------------------------------------------

    async def prepare(self, campaign: Campaign, *, test: bool = False) -> _Prepared:
        """Everything the campaign's messages share. DispatchError when it cannot be sent."""
        store = self.store
        if not self.config.base_url.startswith("https://"):
            raise DispatchError(
                f"links in campaign mail must be https (RFC 8058 3.1): [http] public_url is "
                f"{self.config.base_url!r}; set it to the https address of this server")
        template = await store.get_template(campaign.template_id)
        if template is None:
            raise DispatchError(f"campaign {campaign.name!r}: its template "
                                f"#{campaign.template_id} no longer exists")
        lists = []
        for wanted in campaign.list_ids:
            found = await store.get_list_by_id(wanted)
            if found is not None:
                lists.append(found)
        if not lists:
            raise DispatchError(f"campaign {campaign.name!r}: none of its lists exists any more")
        segment: SegmentFilter | None = None
        if campaign.segment_id is not None:
            stored = next((s for s in await store.list_segments()
                           if s.id == campaign.segment_id), None)
            if stored is None:
                raise DispatchError(f"campaign {campaign.name!r}: its segment "
                                    f"#{campaign.segment_id} no longer exists")
            segment = parse_segment(stored.expression)
        subject = campaign.subject or template.subject
        first = lists[0]
        # One list: an unsubscribe leaves that list. Several: we cannot tell through which
        # list the contact came, so it stops all marketing mail (a suppression).
        list_id: ListId | None = first.id if len(lists) == 1 else None
        info = CampaignInfo(
            campaign_id=campaign.id, name=campaign.name, from_address=campaign.from_address,
            from_name=campaign.from_name, list_name=first.name, list_label=first.list_id_label,
            postal_address=campaign.postal_address, list_id=list_id, reply_to=campaign.reply_to)
        tracked = not test and (campaign.track_opens or campaign.track_clicks)
        spec = BuildSpec(subject=TEST_PREFIX + subject if test else subject,
                         html=template.html, text=template.text, info=info,
                         base_url=self.config.base_url, link_secrets=self.tokens.secrets,
                         list_id=list_id, clicks=tracked and campaign.track_clicks,
                         opens=tracked and campaign.track_opens)
        try:
            builder = spec.builder(self.tokens, now=self.clock.now)
        except TemplateError as exc:
            raise DispatchError(f"campaign {campaign.name!r}: the template does not compile: "
                                f"{exc.message}") from exc
        return _Prepared(campaign, builder, spec, segment, tuple(lists),
                         TokenBucket(campaign.rate_per_minute, monotonic=self._monotonic,
                                     sleep=self._sleep))

    async def _message(self, p: _Prepared, recipient: Recipient) -> tuple[bytes, bool]:
        """The signed message for one recipient (signed on the loop: the few that are not
        part of a batch). Raises RenderError or HeaderError."""
        built = p.builder.build(recipient)
        return await self.signer.sign(built.data), built.smtputf8

    async def _messages(self, p: _Prepared, recipients: Sequence[Recipient]
                        ) -> list[tuple[bytes, bool] | RenderError | HeaderError]:
        """The signed messages (or the error) of the recipients, in order: by the worker
        processes when there are (and the batch is worth it), else in this process."""
        if self.config.build_processes > 0 and (self._builders is not None
                                                or self._pool_builds(recipients)):
            builders = self._started_builders()
            keys = await self.signer.key_material(p.spec.info.sending_domain)
            spec = p.spec if keys == p.spec.dkim else replace(p.spec, dkim=keys)
            p.spec = spec  # a key change since the last batch is signed with from now on
            for attempt in range(BUILD_ATTEMPTS):
                try:
                    return await builders.build(spec, recipients, self.clock.now())
                except BrokenProcessPool as exc:
                    # A worker died (killed, out of memory); the pool starts fresh ones. Once
                    # more; a batch that kills its workers every time pauses the campaign
                    # (DispatchError) rather than being retried at every poll for ever.
                    emit(log, f"campaign {p.campaign.id}", logging.WARNING,
                         status="build worker died", attempt=attempt + 1, reason=str(exc))
            raise DispatchError(f"campaign {p.campaign.name!r}: a message-building worker "
                                f"process died {BUILD_ATTEMPTS} times on the same batch of "
                                f"{len(recipients)} contacts (after contact "
                                f"{recipients[0].contact_id}); nothing of it was queued")
        if self._threads is None:
            self._threads = ThreadedBuild(self.signer, self.config.sign_threads)
        return await self._threads.build(p.builder, recipients)

    def _started_builders(self) -> BuildPool:
        """The build workers: a shared pool as given, or this run's own, started (all its
        processes at once) the first time a batch needs it."""
        if self._builders is None:
            self._builders = BuildPool(self.config.build_processes)
            self._builders.start()
        return self._builders

    def _pool_builds(self, batch: Sequence[object]) -> bool:
        """Whether a batch this large is built by worker processes (when there are)."""
        return self.config.build_processes > 0 and len(batch) >= POOL_MIN

    def _close_pool(self) -> None:
        if self._threads is not None:
            self._threads.close()
            self._threads = None
        self._close_builders()

    def _close_builders(self) -> None:
        if self._builders is not None and self._owns_builders:
            cpu, peak = self._builders.usage()
            self.builders_cpu_seconds += cpu
            self.builders_peak_rss_kb = max(self.builders_peak_rss_kb, peak)
            self._builders.close()
            self._builders = None

    def _acceptance(self, p: _Prepared, queue_id: QueueId, address: str, content: bytes,
                    smtputf8: bool) -> Acceptance:
        return Acceptance(queue_id=queue_id, content=content, sender=p.campaign.from_address,
                          remote=(EnvelopeRecipient(address),), priority=Priority.BULK,
                          smtputf8=smtputf8, source="campaign", client=f"campaign {p.campaign.id}")

    # ---- running ---------------------------------------------------------------------------

    async def run(self, campaign_id: CampaignId) -> CampaignStatus:
        """Sends the campaign until it is sent, paused or cancelled; returns its status then.
        LeaseLost when another process dispatches it."""
        store = self.store
        campaign = await store.get_campaign(campaign_id)
        if campaign is None or campaign.status is not S.SENDING:
            return campaign.status if campaign is not None else S.CANCELLED
        if not await self._claim(campaign):
            raise LeaseLost(f"campaign {campaign.name!r} is being sent by another process")
        try:
            p = await self.prepare(campaign)
            emit(log, f"campaign {campaign.id}", status="dispatching", name=campaign.name,
                 cursor=campaign.cursor)
            await self._reconcile(p)
            state = await self._walk(p, campaign.cursor)
            if state is not S.SENDING:
                return state
            state = await self._checkpoint(p, final=True)
            if state is not S.SENDING:
                return state
            done = await store.set_campaign_status(campaign.id, S.SENT,
                                                   only_from=frozenset({S.SENDING}))
            emit(log, f"campaign {campaign.id}", status=done.status.value, name=campaign.name)
            return done.status
        finally:
            self._close_pool()
            await asyncio.shield(self._release(campaign))

    async def _walk(self, p: _Prepared, cursor: ContactId | None) -> CampaignStatus:
        """The audience from `cursor` to its end (SENDING) or to a pause or cancel (the state
        then): batches made ahead while the one before is written (the module doc)."""
        writing: asyncio.Task[None] | None = None
        # Batches being made, in audience order: one, or two with worker processes, so that
        # they always have the next batch's jobs queued while this process writes.
        making: collections.deque[asyncio.Task[_Batch]] = collections.deque()
        # Not for a rate-limited campaign: its batch is ~10 s of sending, and a batch made two
        # ahead would ask the gate ~20 s before its accepts.
        ahead = 2 if self.config.build_processes > 0 and p.bucket.per_second <= 0 else 1
        read_to, exhausted = cursor, False
        state = S.SENDING
        try:
            while True:
                while len(making) < ahead and not exhausted:
                    contacts = await self.store.audience_page(
                        [m.id for m in p.lists], segment=p.segment, after=read_to,
                        limit=self._batch_size(p), sending_domain=p.campaign.sending_domain)
                    if not contacts:
                        exhausted = True
                        break
                    read_to = contacts[-1].id
                    if self._pool_builds(contacts):
                        self._started_builders()  # while this process gates the first batch
                    making.append(asyncio.create_task(self._make_batch(p, contacts)))
                if not making:
                    break
                batch = await making.popleft()
                if writing is not None:
                    await writing  # one batch written at a time, in order (the cursor)
                    writing = None
                # After the batch before is settled, before this one is written: a pause (the
                # guardrails count what was written) leaves this one, and any made ahead,
                # unwritten, as if unmade.
                state = await self._checkpoint(p)
                if state is not S.SENDING:
                    break
                writing = asyncio.create_task(self._write_batch(p, batch))
            if writing is not None:
                await writing
            return state
        except asyncio.CancelledError:
            if writing is not None:  # stopping: what it leaves pending, the next run settles
                writing.cancel()
            raise
        finally:
            # Batches made ahead and not written are dropped (nothing of them is stored).
            await reap(list(making))
            # A failure while the next batch was made: the batch being written is finished
            # (rather than left pending), and never left running behind the caller; an error
            # of its own is retrieved (the first error is the one raised).
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)

    def _batch_size(self, p: _Prepared) -> int:
        size = self.config.batch_size
        if p.bucket.per_second > 0:
            size = min(size, max(1, int(p.bucket.per_second * BATCH_SECONDS)))
        return size

    async def _claim(self, campaign: Campaign) -> bool:
        now = self.clock.now()
        return await self.store.claim_campaign(
            campaign.id, self.config.owner, now, now + timedelta(seconds=self.config.lease_seconds))

    async def _release(self, campaign: Campaign) -> None:
        try:
            await self.store.release_campaign(campaign.id, self.config.owner)
        except DomainError as exc:  # the lease runs out by itself
            emit(log, f"campaign {campaign.id}", logging.WARNING, status="lease not released",
                 reason=exc.message)

    async def _checkpoint(self, p: _Prepared, *, final: bool = False) -> CampaignStatus:
        current = await self.store.get_campaign(p.campaign.id)
        if current is None:
            return S.CANCELLED
        if current.status is not S.SENDING:
            return current.status
        if not await self._claim(current):
            raise LeaseLost(f"campaign {current.name!r}: the lease went to another process")
        now = self._monotonic()
        if final or now - self._last_guard >= self.config.guardrail_interval:
            self._last_guard = now
            verdict = evaluate(self.config.guardrails,
                               await self.store.campaign_counters(current.id))
            if verdict is not None:
                paused = await self.store.set_campaign_status(
                    current.id, S.PAUSED, reason=verdict.reason, detail=verdict.detail,
                    only_from=frozenset({S.SENDING}))
                emit(log, f"campaign {current.id}", logging.WARNING, status="paused",
                     reason=verdict.reason.value, detail=verdict.detail)
                return paused.status
        return S.SENDING

    async def send_batch(self, p: _Prepared, contacts: Sequence[Addressee | Contact]) -> None:
        """One page of the audience, alone: gate, build, record, accept, settle."""
        try:
            await self._write_batch(p, await self._make_batch(p, contacts))
        finally:
            self._close_pool()

    async def _make_batch(self, p: _Prepared, contacts: Sequence[Addressee | Contact]) -> _Batch:
        """Gate, build and sign one page (nothing written yet)."""
        cid = p.campaign.id
        decisions = await self.gate.check_many(
            [c.email for c in contacts], sending_domain=p.campaign.sending_domain,
            list_ids=[m.id for m in p.lists])
        rows: list[SendRecord] = []
        allowed: list[Addressee | Contact] = []
        for contact, decision in zip(contacts, decisions, strict=True):
            if decision.allowed:
                allowed.append(contact)
                continue
            reason = decision.refusal.value if decision.refusal else "refused"
            rows.append(SendRecord(cid, contact.id, contact.email, SendStatus.SKIPPED,
                                   reason=reason, detail=decision.reason))
        made = await self._messages(p, [Recipient(c.email, c.name, c.attributes, c.id)
                                        for c in allowed])
        built: dict[ContactId, tuple[QueueId, bytes, bool]] = {}
        for contact, result in zip(allowed, made, strict=True):
            if isinstance(result, tuple):
                queue_id = new_queue_id()
                built[contact.id] = (queue_id, *result)
                rows.append(SendRecord(cid, contact.id, contact.email, SendStatus.PENDING,
                                       queue_id))
            else:
                rows.append(SendRecord(cid, contact.id, contact.email, SendStatus.FAILED,
                                       reason="render" if isinstance(result, RenderError)
                                       else "header", detail=result.message))
        return _Batch(contacts, rows, built)

    async def _write_batch(self, p: _Prepared, batch: _Batch) -> None:
        """One made batch written; the cursor moves past it. Without a rate, in one transaction
        (the module doc's fast path) unless one of its contacts has a row already; else
        steps 1 to 3."""
        if p.bucket.per_second <= 0 and await self._queue_at_once(p, batch):
            return
        cid = p.campaign.id
        recorded = await self.store.record_sends(cid, batch.rows)
        ours: list[tuple[SendRecord, bytes, bool]] = []
        earlier: list[SendRecord] = []
        for row in recorded:
            if row.status is not SendStatus.PENDING:
                continue
            mine = batch.built.get(row.contact_id)
            if mine is not None and mine[0] == row.queue_id:
                ours.append((row, mine[1], mine[2]))
            else:
                earlier.append(row)  # an earlier run's row: reconciled like one
        updates = await self._accept_all(p, ours)
        if earlier:
            updates += await self._settle_pending(p, earlier)
        await self.store.settle_sends(cid, updates, cursor=batch.contacts[-1].id)
        if updates and self._on_queued is not None:
            self._on_queued()

    async def _queue_at_once(self, p: _Prepared, batch: _Batch) -> bool:
        """The batch's rows, written queued, its messages and the cursor in one transaction;
        False (nothing written) when a contact of the batch has a row already or a queue id is
        taken: the three steps then sort it out contact by contact."""
        cid = p.campaign.id
        rows: list[SendRecord] = []
        acceptances: list[Acceptance] = []
        for row in batch.rows:
            mine = batch.built.get(row.contact_id)
            if mine is None or row.status is not SendStatus.PENDING:
                rows.append(row)  # skipped or failed: written as it is
                continue
            queue_id, content, utf8 = mine
            rows.append(SendRecord(cid, row.contact_id, row.email, SendStatus.QUEUED, queue_id))
            acceptances.append(self._acceptance(p, queue_id, row.email, content, utf8))
        try:
            await self.store.queue_sends(cid, rows, acceptances, batch.contacts[-1].id)
        except StorageError:
            raise  # as a failed write of the three steps: the runner tries again later
        except DomainError as exc:
            emit(log, f"campaign {cid}", status="batch written in three steps", reason=exc.message)
            return False
        if acceptances and self._on_queued is not None:
            self._on_queued()
        return True

    async def _accept_all(self, p: _Prepared, items: Sequence[tuple[SendRecord, bytes, bool]]
                          ) -> list[Update]:
        """Accepts each under its row's queue id; the rows that are now queued. A failure that
        is not a duplicate id leaves its row pending and, after the others are settled by the
        caller, stops the run (the next run reconciles it)."""
        # No rate: the whole batch in one transaction. A rate: a second's worth at a time, each
        # chunk accepted as soon as its tokens are taken (the chunks run concurrently).
        size = len(items) if p.bucket.per_second <= 0 else max(1, int(p.bucket.capacity))
        tasks: list[asyncio.Future[list[DomainError | None]]] = []
        chunk: list[tuple[SendRecord, bytes, bool]] = []
        try:
            for item in items:
                await p.bucket.take()
                chunk.append(item)
                if len(chunk) >= size:
                    tasks.append(asyncio.ensure_future(self._accept_chunk(p, chunk)))
                    chunk = []
            if chunk:
                tasks.append(asyncio.ensure_future(self._accept_chunk(p, chunk)))
            results = [err for errors in await asyncio.gather(*tasks) for err in errors]
        finally:
            # Cancelled (the run stopped) or a chunk raised: the other chunks are ours to end
            # and wait for, not to leave accepting after we returned (what they leave pending
            # the next run reconciles).
            await reap(tasks)
        failed = [row for (row, _c, _u), err in zip(items, results, strict=True) if err is not None]
        accepted = await self.store.accepted_queue_ids(
            [r.queue_id for r in failed if r.queue_id is not None]) if failed else set()
        updates = [(row.contact_id, SendStatus.QUEUED, "", "")
                   for (row, _c, _u), err in zip(items, results, strict=True)
                   if err is None or row.queue_id in accepted]
        lost = [(row, err) for (row, _c, _u), err in zip(items, results, strict=True)
                if err is not None and row.queue_id not in accepted]
        if lost:
            _row, err = lost[0]
            await self.store.settle_sends(p.campaign.id, updates)
            if isinstance(err, StorageError):
                # The database failed (a reset connection, a busy lock, a spool write): the
                # runner's next poll tries again and reconciles the rows left pending; the
                # campaign is not paused for what a retry mends.
                raise err
            raise DispatchError(f"campaign {p.campaign.name!r}: {len(lost)} message(s) could not "
                                f"be queued ({err}); they stay pending for the next run")
        return updates

    async def _accept_chunk(self, p: _Prepared, chunk: Sequence[tuple[SendRecord, bytes, bool]]
                            ) -> list[DomainError | None]:
        """The chunk in one transaction; if that fails, one by one (the module doc, step 2).
        Per message: None when it is accepted, else the error."""
        acceptances = []
        for row, content, utf8 in chunk:
            assert row.queue_id is not None
            acceptances.append(self._acceptance(p, row.queue_id, row.email, content, utf8))
        try:
            await self.store.accept_many(acceptances)
        except DomainError as exc:
            if len(acceptances) == 1:
                return [exc]
        else:
            return [None] * len(acceptances)

        async def one(acceptance: Acceptance) -> DomainError | None:
            try:
                await self.store.accept(acceptance)
            except DomainError as exc:
                return exc
            return None

        return list(await asyncio.gather(*(one(a) for a in acceptances)))

    async def _settle_pending(self, p: _Prepared, rows: Sequence[SendRecord]) -> list[Update]:
        """Pending rows of an earlier run: queued if their accept committed, else accepted now
        under their own queue id."""
        ids = [r.queue_id for r in rows if r.queue_id is not None]
        accepted = await self.store.accepted_queue_ids(ids)
        updates: list[Update] = []
        again: list[tuple[SendRecord, bytes, bool]] = []
        waiting: list[tuple[SendRecord, Contact]] = []
        for row in rows:
            if row.queue_id in accepted:
                updates.append((row.contact_id, SendStatus.QUEUED, "", ""))
                continue
            contact = await self.store.get_contact_by_id(row.contact_id)
            if contact is None or row.queue_id is None:
                updates.append((row.contact_id, SendStatus.FAILED, "gone",
                                "the contact was removed before its message was queued"))
                continue
            waiting.append((row, contact))
        # Not queued yet: the gate is asked again, as for a new batch. A pending row may be days
        # old (a crash, a pause): an unsubscribe or a complaint since then wins.
        decisions = await self.gate.check_many(
            [contact.email for _row, contact in waiting],
            sending_domain=p.campaign.sending_domain, list_ids=[m.id for m in p.lists])
        for (row, contact), decision in zip(waiting, decisions, strict=True):
            if not decision.allowed:
                updates.append((row.contact_id, SendStatus.SKIPPED,
                                decision.refusal.value if decision.refusal else "refused",
                                decision.reason))
                continue
            recipient = Recipient(contact.email, contact.name, contact.attributes, contact.id)
            try:
                content, utf8 = await self._message(p, recipient)
            except (RenderError, HeaderError) as exc:
                updates.append((row.contact_id, SendStatus.FAILED, "render", exc.message))
                continue
            again.append((row, content, utf8))
        if again:
            emit(log, f"campaign {p.campaign.id}", status="resending pending",
                 count=len(again))
            updates += await self._accept_all(p, again)
        return updates

    async def _reconcile(self, p: _Prepared) -> None:
        after: ContactId | None = None
        while True:
            rows = await self.store.pending_sends(p.campaign.id, after=after,
                                                  limit=self.config.batch_size)
            if not rows:
                return
            emit(log, f"campaign {p.campaign.id}", status="reconciling", pending=len(rows))
            updates = await self._settle_pending(p, rows)
            await self.store.settle_sends(p.campaign.id, updates)
            after = rows[-1].contact_id
            if self._on_queued is not None:
                self._on_queued()

    # ---- test sends ------------------------------------------------------------------------

    async def test_send(self, campaign: Campaign, addresses: Sequence[str]) -> list[QueueId]:
        """Queues the campaign's message to each address (see the module doc)."""
        if not 1 <= len(addresses) <= MAX_TEST_ADDRESSES:
            raise CampaignError(f"a test goes to 1 to {MAX_TEST_ADDRESSES} addresses")
        refused = []
        for address in addresses:
            decision = await self.gate.check(address, sending_domain=campaign.sending_domain,
                                             purpose=Purpose.TRANSACTIONAL)
            if not decision.allowed:
                refused.append(f"{address}: {decision.reason}")
        if refused:
            raise CampaignError("no test sent; refused by the send gate: " + "; ".join(refused))
        p = await self.prepare(campaign, test=True)
        queued: list[QueueId] = []
        for address in addresses:
            contact = await self.store.get_contact(address)
            recipient = (Recipient(contact.email, contact.name, contact.attributes, contact.id)
                         if contact is not None else Recipient(address))
            content, utf8 = await self._message(p, recipient)
            queue_id = new_queue_id()
            await self.store.accept(self._acceptance(p, queue_id, recipient.email, content, utf8))
            queued.append(queue_id)
        if self._on_queued is not None:
            self._on_queued()
        return queued


__all__ = [
    "DispatchConfig",
    "DispatchError",
    "Dispatcher",
    "LeaseLost",
    "MessageSigner",
]
