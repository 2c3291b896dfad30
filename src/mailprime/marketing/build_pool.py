"""Campaign messages built and DKIM-signed in worker processes (`[marketing] build_processes`).

Theory of operation
-------------------
Building a campaign message (template render, tracking links, MIME) and signing it (RSA) is
pure CPU and needs nothing from the database: a contact's data in, signed octets out. One
Python process runs Python on one core at a time (the GIL), so campaign dispatch hands this
work to worker processes, about one per core, and keeps for itself what must stay in one
place: reading the audience, the gate, and the writes that make exactly-once hold
(marketing.dispatch).

A job is a chunk of recipients and the campaign's `BuildSpec`: the template source, what the
campaign's messages share, the link keys and the From domain's DKIM keys (PEM), all plain
data. A worker compiles a spec once and keeps the last few under their `key` (which changes
with anything in the spec), so the spec travels with every job and a worker needs no set-up
call: a replacement worker, or one that serves two campaigns, compiles again. It travels
pickled once per spec in the dispatcher, beside its key, and a worker unpickles it only when
the key is new to it (the ~12 KB of template and keys were pickled, unpickled and hashed
again for every job).

Outcomes come back in recipient order: the signed octets (placed in a memory area shared with
the dispatcher, marketing.build_results, where they fit) and SMTPUTF8, or the error, as data
(a RenderError's TemplateProblem, a HeaderError's text) that `BuildPool.build` turns back into
the exception, so the dispatcher records a failed row exactly as when it builds in process. An
error of the worker itself (a key the crypto library refuses) fails the job, and the batch
with it, as it would in process; a worker that dies (killed, out of memory) breaks the pool:
the batch fails before anything of it is written, and the run stops as on a storage error
(the runner's next poll starts a fresh pool and resumes from the cursor).

Workers are started with "spawn": the dispatching process has threads (the group committer,
asyncio's executors), which fork does not copy safely. A worker whose parent is gone (killed
with SIGKILL: no chance to shut the pool down) sees itself re-parented within a second and
exits, so nothing is left behind.

Clock: a job carries the dispatcher's clock reading when it was handed out, and the worker
dates the job's messages by it (Date, DKIM t=): workers read no clock of their own, and a
test's clock reaches them as it reaches a build in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

from mailprime import heap
from mailprime.domain.errors import StorageError
from mailprime.domain.ids import ContactId, ListId
from mailprime.marketing.build_results import (
    Placed,
    ResultArea,
    SlotWriter,
    on_loop_when_done,
    open_in_worker,
)
from mailprime.marketing.link_rewriter import SignedUnsubscribeLinks, TrackingLinks
from mailprime.marketing.message_builder import CampaignInfo, HeaderError, MessageBuilder
from mailprime.marketing.templates import (
    Recipient,
    RenderError,
    TemplateProblem,
    compile_template,
)
from mailprime.marketing.tokens import TokenSigner
from mailprime.message.dkim import SigningKey, load_private_key, sign_with

# Recipients a job: the pool costs the dispatcher ~10 us a message at 16, ~2.5 at 64; at 100
# rather than 50 the whole campaign bench took ~2.5 % less CPU (fewer wake-ups of the pool's
# threads and of the workers), for ~10 MB more peak RSS.
CHUNK = 100
RESULT_PIPE_SIZE = 1 << 20  # octets: see _widen_result_pipe
_KEPT_SPECS = 4  # compiled specs a worker keeps (campaigns it serves at once)
_WATCH_SECONDS = 1.0  # how often a worker checks that its parent is alive

# One recipient as it travels to a worker: address, name, attributes, contact id.
RecipientData = tuple[str, str, dict[str, object], int | None]
# One outcome as it travels back: (offset, length, SMTPUTF8) of the signed octets in the result
# area, (signed octets, SMTPUTF8), ("render", problem) or ("header", text).
Outcome = Placed | tuple[bytes, bool] | tuple[str, TemplateProblem] | tuple[str, str]
Built = tuple[bytes, bool] | RenderError | HeaderError


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything the messages of one campaign share, as plain data (see the module doc)."""

    subject: str  # template sources, the subject already with a test send's prefix
    html: str
    text: str | None
    info: CampaignInfo
    base_url: str
    link_secrets: tuple[bytes, ...] = field(repr=False)  # TokenSigner's keys, newest first
    list_id: ListId | None  # the list an unsubscribe leaves (None: all marketing mail)
    clicks: bool
    opens: bool
    # (domain, selector, PEM) of the From domain's active DKIM keys, as DkimSigner loaded them.
    # Kept out of repr: a spec in a log line must not show private keys or link secrets.
    dkim: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)

    @property
    def key(self) -> str:
        """Names the spec in a worker's cache: a digest of all of it, secrets and keys too."""
        digest = hashlib.sha256(repr((repr(self), self.link_secrets, self.dkim))
                                .encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def builder(self, tokens: TokenSigner, *,
                now: Callable[[], datetime] | None = None) -> MessageBuilder:
        """The MessageBuilder of these messages (in the dispatcher, and in each worker), dating
        them by `now` (default: the system clock). Raises TemplateError if the template does
        not compile."""
        compiled = compile_template(self.subject, self.html, self.text)
        tracking = (TrackingLinks(tokens, self.base_url, self.info.campaign_id,
                                  clicks=self.clicks, opens=self.opens)
                    if self.clicks or self.opens else None)
        links = SignedUnsubscribeLinks(tokens, self.base_url, self.info.campaign_id,
                                       self.list_id, self.info.sending_domain)
        return MessageBuilder(compiled, self.info, links, now=now,
                              html_filter=tracking.html_filter if tracking else None)

    def signing_keys(self) -> dict[str, tuple[SigningKey, ...]]:
        keys: dict[str, list[SigningKey]] = {}
        for domain, selector, pem in self.dkim:
            keys.setdefault(domain, []).append(SigningKey(domain, selector, load_private_key(pem)))
        return {domain: tuple(found) for domain, found in keys.items()}


# ---- in the worker ----------------------------------------------------------------------------

_compiled: dict[str, tuple[MessageBuilder, dict[str, tuple[SigningKey, ...]]]] = {}


def _start_worker(parent: int, area_fd: int = -1, area_size: int = 0) -> None:
    """Worker start-up: exit when the parent is gone (see the module doc), map the result area
    (when the parent has one), and leave SIGINT and SIGTERM to the parent. A Ctrl-C in the
    terminal or a service manager's stop signals the whole process group; the dispatcher's
    graceful stop ends the workers itself (pool shutdown), and a worker that died of the
    signal first would fail the batch in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="mailprime-build-watch", daemon=True).start()
    if area_fd >= 0:
        open_in_worker(parent, area_fd, area_size)
    heap.settle()


def _started() -> None:
    """A job that does nothing: what `BuildPool.start` sends to have the workers started."""


# The time of the job being built (the dispatcher's clock, see the module doc): what the cached
# builders date their messages by.
_job_time: list[datetime] = []


Compiled = tuple[MessageBuilder, dict[str, tuple[SigningKey, ...]]]


def _made(spec: BuildSpec, key: str | None = None) -> Compiled:
    key = key or spec.key
    found = _compiled.get(key)
    if found is None:
        if len(_compiled) >= _KEPT_SPECS:
            _compiled.clear()
        found = _compiled[key] = (
            spec.builder(TokenSigner(spec.link_secrets), now=lambda: _job_time[0]),
            spec.signing_keys())
    return found


def build_chunk(spec: BuildSpec, recipients: Sequence[RecipientData],
                when: datetime, slot: int | None = None) -> list[Outcome]:
    """One job, in a worker: each recipient's message built and signed (or its error), dated
    `when`; the messages placed in `slot` of the result area while they fit."""
    return _build(_made(spec), recipients, when, slot)


def _build_packed(key: str, packed: bytes, recipients: Sequence[RecipientData], when: datetime,
                  slot: int | None) -> list[Outcome]:
    """`build_chunk` as the pool sends it: the spec pickled (`PackedSpec`), unpickled only
    when this worker has not compiled it yet."""
    found = _compiled.get(key)
    if found is None:
        spec = pickle.loads(packed)  # noqa: S301 - our own dispatcher's pickle, over our pipe
        if not isinstance(spec, BuildSpec):
            raise TypeError(f"a build job carried {type(spec).__name__}, not a BuildSpec")
        found = _made(spec, key)
    return _build(found, recipients, when, slot)


def _build(compiled: Compiled, recipients: Sequence[RecipientData], when: datetime,
           slot: int | None) -> list[Outcome]:
    _job_time[:] = [when]
    builder, keys = compiled
    now = int(when.timestamp())
    placing = SlotWriter(slot)
    out: list[Outcome | None] = []
    made: list[tuple[int, bytes, bool]] = []  # (its place in `out`, the message, SMTPUTF8)
    for email, name, attributes, contact_id in recipients:
        recipient = Recipient(email, name, attributes,
                              ContactId(contact_id) if contact_id is not None else None)
        try:
            built = builder.build(recipient)
        except RenderError as exc:
            out.append(("render", exc.problem))
            continue
        except HeaderError as exc:
            out.append(("header", exc.message))
            continue
        made.append((len(out), built.data, built.smtputf8))
        out.append(None)
    # Signed once the job's messages are built, not in turns with them: between two RSA
    # signatures the build ran ~40 % slower (the signature's code and tables push the
    # template engine's out of the core's caches; measured 56 -> 79 us a message).
    for index, data, utf8 in made:
        out[index] = placing.place(sign_with(data, keys, now), utf8)
    return cast(list[Outcome], out)


# ---- in the dispatcher ------------------------------------------------------------------------

def _travelling(recipient: Recipient) -> RecipientData:
    attributes = recipient.attributes
    return (recipient.email, recipient.name,
            attributes if isinstance(attributes, dict) else dict(attributes),
            int(recipient.contact_id) if recipient.contact_id is not None else None)


def _outcome(item: Outcome, area: ResultArea | None, slot: int | None) -> Built:
    if len(item) == 3:
        offset, length, utf8 = item
        if area is None or slot is None:
            raise StorageError("a build worker placed a message in a result area there is not")
        return area.copy(offset, length, slot), utf8
    first, second = item
    if isinstance(first, bytes):
        assert isinstance(second, bool)
        return first, second
    if first == "render":
        assert isinstance(second, TemplateProblem)
        return RenderError(second)
    return HeaderError(str(second))


async def _outcome_of(job: Future[list[Outcome]]) -> list[Outcome]:
    """The job's result, awaited without ever cancelling the job itself (asyncio.wrap_future
    would, when the caller is cancelled). Python 3.11's pool, marking its pending jobs failed
    when a worker dies, calls set_exception on each and stops at the first one cancelled
    (InvalidStateError in its manager thread), leaving the jobs after it unresolved for ever:
    a cancel racing a dying worker would hang the dispatcher. An abandoned job runs on
    instead — at most SLOTS_PER_WORKER of them per worker are in the pool — and its slot comes
    back when it ends."""
    waiter: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()

    def settle(done: Future[list[Outcome]]) -> None:
        if waiter.done():  # the caller stopped waiting
            return
        if done.cancelled():  # by the pool's shutdown (the server stopping): as wrap_future
            waiter.cancel()
            return
        error = done.exception()
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    on_loop_when_done(job, settle)
    return await waiter


def processes_for(setting: int, serve_workers: int = 1, cores: int | None = None) -> int:
    """The build worker processes one serve process starts for `[marketing] build_processes`:
    -1 none; N that many; 0 one per core (`cores`, default this machine's), shared among the
    `serve_workers` serve processes (`[server] workers`, 0: one per core), each of which runs
    its own dispatchers, and none on a one-core machine (a worker there would only take turns
    with the dispatcher)."""
    if setting != 0:
        return max(0, setting)
    if cores is None:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    if cores <= 1:
        return 0
    return max(1, cores // max(1, serve_workers or cores))


def _widen_result_pipe(executor: ProcessPoolExecutor) -> None:
    """A job's results (~700 KB: 50 messages) cross a 64 KB pipe in a dozen blocking writes,
    each a pair of context switches: measured, a worker spent ~24 us of CPU a message on it,
    ~11.5 with a 1 MB pipe (Linux F_SETPIPE_SZ; /proc/sys/fs/pipe-max-size is 1 MB by
    default). The pipe is the executor's own (a private attribute): where it is not there, or
    the kernel refuses, the pipe stays as it is."""
    reader = getattr(getattr(executor, "_result_queue", None), "_reader", None)
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if reader is None or setsize is None:
        return
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(reader.fileno(), setsize, RESULT_PIPE_SIZE)


class BuildPool:
    """Worker processes that build and sign campaign messages (see the module doc)."""

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._executor: ProcessPoolExecutor | None = None
        # The current executor's result area: its workers map it at start-up. An executor that
        # broke takes its area into retirement (a surviving worker of it may still write its
        # slots), closed once every slot of it is back.
        self._area: ResultArea | None = None
        self._retired: list[ResultArea] = []
        self._packed: tuple[BuildSpec, str, bytes] | None = None  # the last spec, its key, pickled
        self._closed = False

    def _pool(self) -> tuple[ProcessPoolExecutor, ResultArea | None]:
        """The executor and its result area (None where there is none)."""
        if self._closed:  # never started again behind the owner's back, left unclosed
            raise StorageError("the message-building processes are stopped (the server is "
                               "stopping); the batch is retried at the next run")
        if self._executor is None:
            self._close_retired()
            area = self._area = ResultArea.make(self.processes)
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), area.fd if area else -1, area.size if area else 0))
            _widen_result_pipe(self._executor)
        return self._executor, self._area

    def start(self) -> None:
        """Starts the worker processes now rather than with the first jobs: each imports
        Python and the campaign engine (~0.5 s of CPU), which then overlaps the dispatcher's
        own work before its first batch (the audience page, the gate) instead of leaving a
        core idle after it. The executor starts a worker per job it is given while none is
        idle, so one empty job per process starts them all."""
        pool, _area = self._pool()
        for _ in range(self.processes):
            pool.submit(_started)

    def _close_retired(self, every: bool = False) -> None:
        """Closes the retired areas whose slots are all back (`every`: all of them; a worker
        still writing keeps its own mapping, and a copy still to come fails as stopping)."""
        for area in list(self._retired):
            if every or area.all_free():
                area.close()
                self._retired.remove(area)

    async def build(self, spec: BuildSpec, recipients: Sequence[Recipient],
                    when: datetime) -> list[Built]:
        """The recipients' signed messages (or errors) dated `when`, in order.
        BrokenProcessPool when a worker died: the pool then starts fresh workers for the next
        call."""
        pool, area = self._pool()
        if self._retired:  # a broken pool's slots come back as its failed jobs are settled
            self._close_retired()
        if self._packed is None or self._packed[0] is not spec:
            self._packed = (spec, spec.key, pickle.dumps(spec, pickle.HIGHEST_PROTOCOL))
        _spec, key, packed = self._packed
        jobs = [asyncio.ensure_future(self._job(
                    pool, area, [_travelling(r) for r in recipients[at:at + CHUNK]],
                    key=key, packed=packed, when=when))
                for at in range(0, len(recipients), CHUNK)]
        try:
            done = await asyncio.gather(*jobs)
        except BrokenProcessPool:
            if self._executor is pool:  # not replaced by another caller meanwhile
                self._executor = None
                pool.shutdown(wait=False, cancel_futures=True)
                if area is not None:  # the pool marks jobs failed before its workers stop
                    self._retired.append(area)
                    self._area = None
            raise
        finally:
            for job in jobs:  # cancelled or failed: the jobs not started are dropped
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        return [item for chunk in done for item in chunk]

    async def _job(self, pool: ProcessPoolExecutor, area: ResultArea | None,
                   recipients: list[RecipientData], *, key: str, packed: bytes,
                   when: datetime) -> list[Built]:
        """One job in the pool, with a slot of the pool's result area lent to it while it is
        there (marketing.build_results says when a slot may be lent again)."""
        slot = await area.lend() if area is not None else None
        job: Future[list[Outcome]] | None = None
        try:
            job = pool.submit(_build_packed, key, packed, recipients, when, slot)
            return [_outcome(item, area, slot) for item in await _outcome_of(job)]
        finally:
            if area is not None and slot is not None:
                if job is None:
                    area.give_back(slot)
                else:
                    area.give_back_when_done(slot, job)

    def pids(self) -> list[int]:
        """The worker processes running now (none before the first job)."""
        processes: Mapping[int, object] = getattr(self._executor, "_processes", None) or {}
        return list(processes)

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, peak resident sets in kB) of the workers, added up, read from /proc
        while they run ((0, 0) off Linux): the campaign bench counts them with the
        dispatcher's own."""
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        cpu, peak = 0.0, 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
            cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (stat fields 14, 15)
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak += int(line.split()[1])
        return cpu, peak

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._area is not None:  # a worker still running keeps its own mapping
            self._retired.append(self._area)
            self._area = None
        self._close_retired(every=True)


__all__ = ["CHUNK", "BuildPool", "BuildSpec", "build_chunk", "processes_for"]
