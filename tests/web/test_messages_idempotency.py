"""POST /api/v1/messages with an Idempotency-Key across a crash (web.messages_api's "no send
twice"): a request that dies after its message was accepted but before its response was stored
is answered, on retry, with that message's response instead of a second send; one that died
before the accept sends on retry under the queue id it had chosen. Real SQLite, real socket."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from mailprime.domain.ids import QueueId, new_queue_id
from mailprime.domain.mail import Priority
from mailprime.message.msgid_token import MsgIdCodec, QueueOrigin
from mailprime.services.dkim_keys import DkimSigner
from mailprime.services.inject import Injector
from mailprime.web.messages_api import (
    STALE_SECONDS,
    MessageIn,
    request_hash,
    signed_message_id,
)
from tests.web.conftest import LiveWeb, live_web
from tests.web.test_messages_api import BASIC, FROM, bearer, ready


class Crash(BaseException):
    """The process dying: nothing after it runs (a BaseException, so no `except Exception` in
    the request's path handles it, as nothing would run in a dead process)."""


def crash_after_accept() -> None:
    raise Crash("killed right after the accept committed")


async def claimed(web: LiveWeb, key: str, body: dict[str, Any], queue_id: QueueId) -> None:
    """The record a request leaves when it dies after steps 1 and 2 (claim, prepared answer)."""
    api_key = next(k for k in await web.store.list_api_keys() if k.name == "test")
    now = web.clock.now()
    claim = await web.store.claim_idempotency_key(
        api_key.id, key, request_hash(MessageIn.model_validate(body)), now=now,
        stale_before=now - timedelta(seconds=STALE_SECONDS), expired_before=now - timedelta(days=1),
        queue_id=queue_id)
    assert claim.owned
    prepared = {"id": queue_id, "message_id": "<prepared@a.test>",
                "recipients": [{"email": r, "status": "queued", "reason": ""}
                               for r in body["to"]]}
    await web.store.prepare_idempotency_key(api_key.id, key, json.dumps(prepared),
                                            claimed_at=claim.record.created_at)


def test_a_request_killed_after_its_accept_is_answered_on_retry_without_a_second_send(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            assert web.app is not None
            web.app.state.injector = Injector(web.store, crash_after_accept,
                                              dkim=DkimSigner(web.store, web.clock))
            died = await web.client.post("/api/v1/messages", json=BASIC,
                                         headers=bearer(key, "order-1"))
            assert died.status_code == 500  # the request died: its client saw no answer
            queue = await web.store.list_queue()
            assert len(queue) == 1  # ... but its message was accepted
            sent_id = queue[0][0].id
            web.app.state.injector = Injector(web.store, dkim=DkimSigner(web.store, web.clock))
            # The retry comes at once (the record is pending, not stale): the message it finds
            # under the record's queue id answers it.
            retry = await web.client.post("/api/v1/messages", json=BASIC,
                                          headers=bearer(key, "order-1"))
            assert retry.status_code == 202, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            answer = retry.json()
            assert answer["id"] == sent_id
            blob = await web.store.read_blob(queue[0][0].blob_id)
            message = email.message_from_bytes(blob, policy=email.policy.default)
            assert answer["message_id"] == message["Message-ID"]
            assert [r["status"] for r in answer["recipients"]] == ["queued"] * 3
            # The record is complete now: later retries replay it; still one message.
            again = await web.client.post("/api/v1/messages", json=BASIC,
                                          headers=bearer(key, "order-1"))
            assert (again.status_code, again.json()) == (202, answer)
            assert len(await web.store.list_queue()) == 1

    asyncio.run(scenario())


def test_a_request_killed_before_its_accept_sends_on_retry_under_its_queue_id(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            chosen = new_queue_id()
            await claimed(web, "order-2", BASIC, chosen)  # and then it died: nothing accepted
            busy = await web.client.post("/api/v1/messages", json=BASIC,
                                         headers=bearer(key, "order-2"))
            assert busy.status_code == 409  # it might still be running
            assert await web.store.list_queue() == []
            web.clock.advance(STALE_SECONDS + 1)
            retry = await web.client.post("/api/v1/messages", json=BASIC,
                                          headers=bearer(key, "order-2"))
            assert retry.status_code == 202, retry.text
            assert "idempotent-replayed" not in retry.headers  # sent now, by the retry
            assert retry.json()["id"] == chosen
            assert [m.id for m, _ in await web.store.list_queue()] == [chosen]

    asyncio.run(scenario())


def test_a_message_for_local_mailboxes_only_counts_as_accepted_too(tmp_path: Path) -> None:
    """Never queued (no remote recipient), it leaves a STORED event under its queue id; a retry
    after the record went stale takes it over, finds the message, and does not file it again."""

    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            account = await web.store.add_account("desk@a.test", "x")
            body = {**BASIC, "to": ["desk@a.test"], "cc": [], "bcc": []}
            chosen = new_queue_id()
            await claimed(web, "order-3", body, chosen)
            injector = Injector(web.store, dkim=DkimSigner(web.store, web.clock))
            assert await injector.inject(FROM, ["desk@a.test"], b"Subject: x\r\n\r\nx\r\n",
                                         queue_id=chosen) == chosen  # then it died
            web.clock.advance(STALE_SECONDS + 1)
            retry = await web.client.post("/api/v1/messages", json=body,
                                          headers=bearer(key, "order-3"))
            assert retry.status_code == 202, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json()["id"] == chosen
            assert retry.json()["message_id"] == "<prepared@a.test>"  # the dead request's answer
            assert len(await web.store.list_messages(account.id, "INBOX")) == 1
            assert await web.store.list_queue() == []

    asyncio.run(scenario())



class FirstLandsFirst:
    """The queue a retry's request sends through, when the request it took over was slow, not
    dead: that one's accept of the same queue id (a local-only message) lands just before the
    retry's own. The accepts are the real Injector's."""

    def __init__(self, injector: Injector, first: Callable[[], Awaitable[object]]) -> None:
        self.injector = injector
        self.first = first

    async def inject(self, sender: str, recipients: Sequence[str], content: bytes, *,
                     priority: Priority = Priority.NORMAL, source: str = "local",
                     queue_id: QueueId | None = None) -> QueueId | None:
        await self.first()
        return await self.injector.inject(sender, recipients, content, priority=priority,
                                          source=source, queue_id=queue_id)


def test_a_retry_whose_taken_over_request_accepts_first_does_not_file_a_second_copy(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            assert web.app is not None
            account = await web.store.add_account("desk@a.test", "x")
            body = {**BASIC, "to": ["desk@a.test"], "cc": [], "bcc": []}
            chosen = new_queue_id()
            await claimed(web, "order-4", body, chosen)  # then it stalled, past STALE_SECONDS
            web.clock.advance(STALE_SECONDS + 1)
            injector = Injector(web.store, dkim=DkimSigner(web.store, web.clock))
            web.app.state.injector = FirstLandsFirst(injector, lambda: injector.inject(
                FROM, ["desk@a.test"], b"Subject: first\r\n\r\nx\r\n", queue_id=chosen))
            retry = await web.client.post("/api/v1/messages", json=body,
                                          headers=bearer(key, "order-4"))
            assert retry.status_code == 202, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json()["id"] == chosen
            filed = await web.store.list_messages(account.id, "INBOX")
            assert len(filed) == 1  # the first request's message, and only it
            assert b"Subject: first" in await web.store.read_blob(filed[0].blob_id)
            web.app.state.injector = injector
            again = await web.client.post("/api/v1/messages", json=body,
                                          headers=bearer(key, "order-4"))
            assert (again.status_code, again.json()) == (202, retry.json())
            assert len(await web.store.list_messages(account.id, "INBOX")) == 1

    asyncio.run(scenario())


def test_two_builds_under_one_queue_id_give_one_message_id(tmp_path: Path) -> None:
    """A slow first request and the retry that took it over build the message under the same
    queue id; the answer either gives must name the Message-ID of the message accepted, so the
    id is made from the queue id (still signed, still naming it for replies), not at random."""
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            await ready(web)
            assert web.app is not None
            deps = web.app.state.deps
            queue_id = new_queue_id()
            first = signed_message_id(deps, queue_id, "a.test")
            assert signed_message_id(deps, queue_id, "a.test") == first
            assert signed_message_id(deps, new_queue_id(), "a.test") != first
            assert MsgIdCodec(deps.signer.secrets).read(first) == QueueOrigin(queue_id)

    asyncio.run(scenario())
