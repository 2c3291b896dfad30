"""Campaign messages built in the dispatching process and DKIM-signed on threads: what
marketing.dispatch uses without build worker processes (`build_processes = -1`, a one-core
machine, batches below POOL_MIN, reconciling, test sends).

Theory of operation
-------------------
An allowed contact's message is built on the event loop (a template error for this contact
comes back as its RenderError or HeaderError, and the batch goes on) and DKIM-signed in two
steps (DkimSigner.deferred_signer): canonicalized and hashed on the loop, its signature made on
a small thread pool (`threads`), SIGN_CHUNK messages a job. `cryptography` releases the GIL
while OpenSSL signs, so the signatures run on another core while the loop builds the next
messages; the Python part stays on the loop, where it does not fight the loop for the GIL. At
most two jobs per thread wait, so memory stays a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from mailprime.marketing.message_builder import HeaderError, MessageBuilder
from mailprime.marketing.templates import Recipient, RenderError

SIGN_CHUNK = 32  # messages one signing job takes: few enough jobs, small enough to overlap

Built = tuple[bytes, bool] | RenderError | HeaderError


class DeferredSigner(Protocol):
    async def deferred_signer(self) -> Callable[[bytes], Callable[[], bytes]]:
        """prepare(message) on the loop, then finish() on any thread returns it signed."""
        ...


def _finish_all(items: list[tuple[int, Callable[[], bytes]]]) -> list[tuple[int, bytes]]:
    """One signing job, on a pool thread: the private-key operations of prepared messages."""
    return [(index, finish()) for index, finish in items]


async def reap(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Cancels what has not finished and waits for all: every outcome retrieved (a no-op
    when they are all done)."""
    for future in futures:
        future.cancel()
    await asyncio.gather(*futures, return_exceptions=True)


class ThreadedBuild:
    def __init__(self, signer: DeferredSigner, threads: int) -> None:
        self._signer = signer
        self._threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    async def build(self, builder: MessageBuilder, recipients: Sequence[Recipient]
                    ) -> list[Built]:
        """The signed messages (or the error) of the recipients, in order."""
        prepare = await self._signer.deferred_signer()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="mailprime-sign")
        pool = self._pool
        loop = asyncio.get_running_loop()
        out: list[Built] = []
        jobs: list[asyncio.Future[list[tuple[int, bytes]]]] = []
        waiting: set[asyncio.Future[list[tuple[int, bytes]]]] = set()
        limit = 2 * self._threads
        try:
            for start in range(0, len(recipients), SIGN_CHUNK):
                chunk: list[tuple[int, Callable[[], bytes]]] = []
                for recipient in recipients[start:start + SIGN_CHUNK]:
                    try:
                        built = builder.build(recipient)
                    except (RenderError, HeaderError) as exc:
                        out.append(exc)
                        continue
                    chunk.append((len(out), prepare(built.data)))
                    out.append((b"", built.smtputf8))  # the signed octets come from the job
                if chunk:
                    job = loop.run_in_executor(pool, _finish_all, chunk)
                    jobs.append(job)
                    waiting.add(job)
                if len(waiting) >= limit:
                    _done, waiting = await asyncio.wait(waiting,
                                                        return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(0)  # the batch being written moves on meanwhile
            for job in jobs:
                for index, signed in await job:
                    item = out[index]
                    assert isinstance(item, tuple)
                    out[index] = (signed, item[1])
        finally:
            # A failed job (or our cancellation) leaves the others: drop those not started
            # and retrieve every outcome, so none is left running unowned or logged as
            # "exception was never retrieved".
            await reap(jobs)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


__all__ = ["SIGN_CHUNK", "DeferredSigner", "ThreadedBuild", "reap"]
