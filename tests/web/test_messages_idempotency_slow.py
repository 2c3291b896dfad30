"""POST /api/v1/messages with an Idempotency-Key, when the first request is slow, not dead: it
stalls at its accept past STALE_SECONDS, a retry with the same key takes the record over, and
both go on to accept under the record's one queue id. One accept lands, the other is refused
(AlreadyExists). Whichever lands first, and whichever of the two each answer goes to, every
answer — the slow request's, the retry's and a later replay — must describe the one message
stored: its queue id, its Message-ID and which recipients it went to. Between the two builds a
recipient is suppressed, so the two requests' own answers differ and a wrong one shows.

Real HTTP on loopback, the real Injector and SQLite store; the only thing the test controls is
the order of the two accepts (a queue that holds the first back until the test lets it go)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import Priority
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.inject import Injector
from mailprime.web.messages_api import STALE_SECONDS
from tests.web.conftest import live_web
from tests.web.test_messages_api import BASIC, bearer, queued, ready


class TwoAccepts:
    """Hands both requests' accepts to the real Injector, in the order the test chooses: the
    first (the slow request's) waits at its accept until the retry's has reached its own; then
    either the slow one lands first (`retry_first` False) or the retry's does."""

    def __init__(self, injector: Injector, *, retry_first: bool) -> None:
        self.injector = injector
        self.retry_first = retry_first
        self.calls = 0
        self.slow_waiting = asyncio.Event()
        self.slow_may_go = asyncio.Event()
        self.slow_done = asyncio.Event()

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "local",
                     queue_id: QueueId | None = None) -> QueueId | None:
        self.calls += 1
        accept = self.injector.inject(sender, recipients, content, priority=priority,
                                      source=source, queue_id=queue_id)
        if self.calls == 1:  # the slow request
            self.slow_waiting.set()
            await self.slow_may_go.wait()
            try:
                return await accept
            finally:
                self.slow_done.set()
        if self.retry_first:
            try:
                return await accept
            finally:
                self.slow_may_go.set()
        self.slow_may_go.set()
        await self.slow_done.wait()
        return await accept


@pytest.mark.parametrize("retry_first", [False, True], ids=["slow-lands-first",
                                                            "retry-lands-first"])
def test_every_answer_names_the_one_message_stored(tmp_path: Path, retry_first: bool) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            assert web.app is not None
            accepts = TwoAccepts(Injector(web.store, dkim=DkimSigner(web.store, web.clock)),
                                 retry_first=retry_first)
            web.app.state.injector = accepts
            headers = bearer(key, "order-9")
            slow = asyncio.create_task(web.client.post("/api/v1/messages", json=BASIC,
                                                       headers=headers))
            await accepts.slow_waiting.wait()  # checked, built, prepared: stalled at its accept
            await web.store.suppress(Suppression("bob@b.test", "", SuppressionReason.HARD_BOUNCE,
                                                 web.clock.now(), "550 5.1.1"))
            web.clock.advance(STALE_SECONDS + 1)
            retry = await web.client.post("/api/v1/messages", json=BASIC, headers=headers)
            slow_answer = await slow
            replay = await web.client.post("/api/v1/messages", json=BASIC, headers=headers)

            queue = await web.store.list_queue()
            assert len(queue) == 1  # one message for the key
            queue_id = queue[0][0].id
            blob, envelope, _ = await queued(web, queue_id)
            message_id = email.message_from_bytes(blob, policy=email.policy.default)["Message-ID"]
            # The message went to bob if the slow request (built before his suppression) landed.
            assert ("bob@b.test" in envelope) is not retry_first
            for got in (slow_answer, retry, replay):
                assert got.status_code == 202, got.text
                answer: dict[str, Any] = got.json()
                assert (answer["id"], answer["message_id"]) == (queue_id, message_id)
                sent_to = sorted(r["email"].lower() for r in answer["recipients"]
                                 if r["status"] == "queued")
                assert sent_to == envelope, (got.headers, answer)
            assert replay.headers["idempotent-replayed"] == "true"

    asyncio.run(scenario())
