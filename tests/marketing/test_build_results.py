"""The build workers' result area (marketing.build_results): a job's messages are placed in its
slot and copied out whole, what does not fit comes back through the pipe, a worker without the
area returns everything through the pipe, and a slot is lent to one job at a time — given back
after its copies, or, for an abandoned job, only once the job has ended in the pool."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest

from mailprime.domain.errors import StorageError
from mailprime.marketing import build_results
from mailprime.marketing.build_pool import BuildPool, build_chunk
from mailprime.marketing.build_results import SLOT_BYTES, ResultArea, SlotWriter, open_in_worker
from mailprime.marketing.templates import Recipient
from tests.marketing.test_build_pool import NOW, spec

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux's")


@pytest.fixture
def area() -> ResultArea:
    made = ResultArea.make(1)
    assert made is not None
    yield made
    build_results._worker_area.clear()
    made.close()


def _body(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    html = message.get_body(("html",))
    assert html is not None
    return str(html.get_content())


def test_a_job_places_its_messages_in_its_slot_and_they_copy_out_whole(area: ResultArea) -> None:
    open_in_worker(os.getpid(), area.fd, area.size)  # as a worker maps it, through /proc
    people = [(f"u{n}@b.test", f"U{n}", {"n": 1}, n) for n in range(3)]
    placed = build_chunk(spec(), people, NOW, slot=2)
    assert all(len(item) == 3 for item in placed)
    offsets = [item[0] for item in placed]
    assert offsets[0] == 2 * SLOT_BYTES and offsets == sorted(offsets)
    for (offset, length, utf8), (address, name, _a, _c) in zip(placed, people, strict=True):
        assert isinstance(offset, int) and isinstance(length, int) and utf8 is False
        data = area.copy(offset, length, 2)
        assert data.startswith(b"DKIM-Signature:") and f"Hi {name}," in _body(data)
        assert address.encode() in data


def test_what_does_not_fit_comes_back_through_the_pipe(area: ResultArea) -> None:
    open_in_worker(os.getpid(), area.fd, area.size)
    big = "<p>" + "x" * 250_000 + " {{ name }}</p><a href=\"{{ unsubscribe_url }}\">u</a>" \
          " {{ postal_address }}"
    people = [(f"u{n}@b.test", f"U{n}", {"n": 1}, n) for n in range(5)]
    out = build_chunk(spec(html=big), people, NOW, slot=0)
    inline = [item for item in out if isinstance(item[0], bytes)]
    placed = [item for item in out if len(item) == 3]
    assert placed and inline  # the slot took what fit, then the pipe the rest
    assert sum(item[1] for item in placed) <= SLOT_BYTES  # type: ignore[misc]


def test_a_worker_without_the_area_returns_everything_through_the_pipe() -> None:
    build_results._worker_area.clear()
    out = build_chunk(spec(), [("a@b.test", "Ann", {"n": 1}, 1)], NOW, slot=0)
    assert isinstance(out[0][0], bytes)
    assert SlotWriter(None).place(b"x", True) == (b"x", True)


def test_reads_outside_the_jobs_own_slot_are_refused(area: ResultArea) -> None:
    with pytest.raises(StorageError, match="outside its slot"):
        area.copy(area.size - 10, 11, 2)  # past the area
    with pytest.raises(StorageError, match="outside its slot"):
        area.copy(0, 10, 1)  # another job's slot
    assert area.copy(SLOT_BYTES, 3, 1) == b"\0\0\0"
    area.close()
    with pytest.raises(StorageError, match="stopped"):
        area.copy(SLOT_BYTES, 3, 1)


def test_slots_are_lent_one_job_at_a_time(area: ResultArea) -> None:
    async def main() -> None:
        lent = [await area.lend() for _ in range(3)]  # one worker: three slots
        assert sorted(lent) == [0, 1, 2] and lent[0] == 0  # last in, first out: low ones first
        waiting = asyncio.ensure_future(area.lend())
        cancelled = asyncio.ensure_future(area.lend())
        await asyncio.sleep(0)
        assert not waiting.done()
        cancelled.cancel()
        area.give_back(lent[1])
        assert await waiting == lent[1]  # the first waiter gets it
        # A job abandoned while it runs: its slot comes back only when it has ended.
        job: Future[object] = Future()
        area.give_back_when_done(lent[0], job)
        after = asyncio.ensure_future(area.lend())
        await asyncio.sleep(0.05)
        assert not after.done()  # the cancelled waiter took nothing
        job.set_result([])
        assert await asyncio.wait_for(after, 5) == lent[0]
        done: Future[object] = Future()
        done.set_result([])
        area.give_back_when_done(lent[2], done)  # ended already: back at once
        assert await area.lend() == lent[2]

    asyncio.run(main())


def test_a_waiter_cancelled_as_it_is_handed_a_slot_gives_it_back(area: ResultArea) -> None:
    async def main() -> None:
        lent = [await area.lend() for _ in range(3)]
        waiting = asyncio.ensure_future(area.lend())
        await asyncio.sleep(0)
        area.give_back(lent[0])  # handed to the waiter, which has not run yet ...
        waiting.cancel()  # ... and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.wait_for(area.lend(), 1) == lent[0]  # not lost

    asyncio.run(main())


def test_a_broken_pools_area_is_never_lent_to_its_replacement() -> None:
    """A worker of a broken pool may still write its slots after the pool has marked its jobs
    failed: the replacement executor gets an area of its own."""
    async def main() -> None:
        pool = BuildPool(1)
        try:
            await pool.build(spec(), [Recipient("a@b.test", "A", {"n": 1})], NOW)
            first = pool._area
            for pid in pool.pids():
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(BrokenProcessPool):
                await pool.build(spec(), [Recipient(f"u{n}@b.test", "U", {"n": 1})
                                          for n in range(200)], NOW)
            assert pool._area is None and first in pool._retired
            [built] = await pool.build(spec(), [Recipient("b@b.test", "B", {"n": 1})], NOW)
            assert pool._area is not None and pool._area is not first
            assert isinstance(built, tuple) and "Hi B," in _body(built[0])
            # Closed once its slots are all back: at the restart, or at a build after it when
            # the pool's thread settled the failed jobs later (a loaded machine).
            for _ in range(100):
                if first not in pool._retired:
                    break
                await asyncio.sleep(0.05)
                await pool.build(spec(), [Recipient("c@b.test", "C", {"n": 1})], NOW)
            assert first not in pool._retired
        finally:
            pool.close()
        assert not pool._retired

    asyncio.run(main())


def test_a_pool_build_goes_through_the_area() -> None:
    async def main() -> None:
        pool = BuildPool(2)
        try:
            people = [Recipient(f"u{n}@b.test", f"U{n}", {"n": 1}) for n in range(120)]
            made = await pool.build(spec(), people, NOW)
            assert pool._area is not None
            for built, person in zip(made, people, strict=True):
                assert isinstance(built, tuple)
                assert f"Hi {person.name}," in _body(built[0])
            again = await pool.build(spec(), people[:60], NOW)  # slots given back, lent again
            assert [b[0].count(b"DKIM-Signature:") for b in again] == [1] * 60  # type: ignore[union-attr]
        finally:
            pool.close()

    asyncio.run(main())


def test_a_pool_serving_two_campaigns_builds_each_with_its_own_spec() -> None:
    """The spec travels pickled once per spec, and a worker compiles it only when its key is
    new: alternating between two campaigns, each message still has its own template."""
    async def main() -> None:
        pool = BuildPool(1)
        tail = '<a href="{{ unsubscribe_url }}">u</a> {{ postal_address }}'
        first, second = spec(html="<p>First {{ name }}</p>" + tail), \
            spec(html="<p>Second {{ name }}</p>" + tail)
        try:
            for round_ in range(2):
                for made, word in ((first, "First"), (second, "Second")):
                    [built] = await pool.build(made, [Recipient("a@b.test", f"A{round_}",
                                                                {"n": 1})], NOW)
                    assert isinstance(built, tuple)
                    assert f"{word} A{round_}" in _body(built[0])
        finally:
            pool.close()

    asyncio.run(main())


def test_an_abandoned_job_is_never_cancelled_in_the_pool() -> None:
    """Python 3.11's pool stops marking jobs failed at the first cancelled one when a worker
    dies (the jobs after it would never end): a caller that stops waiting leaves the job be;
    the job's outcome, error or shutdown still reaches a caller that waits."""
    from mailprime.marketing.build_pool import _outcome_of

    async def main() -> None:
        abandoned: Future[list[object]] = Future()
        waiting = asyncio.ensure_future(_outcome_of(abandoned))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not abandoned.cancelled()
        abandoned.set_result([])  # ends later: nobody minds
        await asyncio.sleep(0.01)

        failed: Future[list[object]] = Future()
        failed.set_exception(ValueError("worker error"))
        with pytest.raises(ValueError, match="worker error"):
            await _outcome_of(failed)  # type: ignore[arg-type]
        shut: Future[list[object]] = Future()
        shut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await _outcome_of(shut)  # type: ignore[arg-type]
        done: Future[list[object]] = Future()
        done.set_result([(0, 1, False)])
        assert await _outcome_of(done) == [(0, 1, False)]  # type: ignore[arg-type]

    asyncio.run(main())
