"""The dispatcher's own concurrency leaves nothing behind (marketing.dispatch): the accept
chunks of a rated batch end with the run that started them (cancelled with it), and a failed
signing job does not leave the other jobs' failures unretrieved."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailprime.domain.clock import SystemClock
from mailprime.marketing.dispatch import DispatchConfig, Dispatcher
from mailprime.marketing.tokens import TokenSigner
from mailprime.services.dkim_keys import DkimSigner
from tests.marketing.campaign_fixtures import BASE_URL, seed
from tests.marketing.test_dispatch import SECRET, FakeTime, dispatcher, sqlite, started


def _others() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def test_a_cancelled_run_leaves_no_accept_in_flight(tmp_path: Path) -> None:
    async def main() -> None:
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=80, rate=60 * 20)  # 20/s: chunks of 20
            await started(store, seeded)
            time = FakeTime()
            run = asyncio.ensure_future(dispatcher(store, time, batch_size=50).run(
                seeded.campaign.id))

            async def crash(n: int) -> None:
                if n == 55:  # in the second batch, chunks of it accepting
                    run.cancel()
                    await asyncio.sleep(0)

            time.on_sleep = crash
            with pytest.raises(asyncio.CancelledError):
                await run
            assert _others() == []  # no chunk goes on accepting after the run ended

    asyncio.run(main())


class _FailingKey:
    """The DKIM port with a key the crypto library refuses at signing time (every message)."""

    def __init__(self, real: DkimSigner) -> None:
        self.real = real

    async def sign(self, message: bytes) -> bytes:
        raise ValueError("key refused")

    async def deferred_signer(self) -> Callable[[bytes], Callable[[], bytes]]:
        def prepare(message: bytes) -> Callable[[], bytes]:
            def finish() -> bytes:
                raise ValueError("key refused")
            return finish
        return prepare


def test_failed_signing_jobs_are_all_retrieved(tmp_path: Path) -> None:
    unretrieved: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: unretrieved.append(str(context.get("message"))))
        async with sqlite(tmp_path).open() as store:
            seeded = await seed(store, confirmed=100)  # several signing jobs
            await started(store, seeded)
            d = Dispatcher(store, _FailingKey(DkimSigner(store, SystemClock())),
                           TokenSigner([SECRET]), DispatchConfig(base_url=BASE_URL),
                           clock=SystemClock(), monotonic=FakeTime().monotonic,
                           sleep=FakeTime().sleep)
            with pytest.raises(ValueError, match="key refused"):
                await d.run(seeded.campaign.id)
            gc.collect()
            await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert unretrieved == []
