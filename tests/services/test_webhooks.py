"""Webhooks: the signature (pure), the backoff, and the dispatcher with a real SQLite store
POSTing over real sockets (net.http_client) to a receiver on loopback, http and https with a
test CA: signed payloads, a receiver that fails then succeeds, giving up, and the log."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trustme

from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.domain.messaging import DeliveryStatus, WebhookDelivery, WebhookId
from mailprime.net.http_client import HttpClient, verifying_context
from mailprime.services.webhooks import (
    SIGNATURE_HEADER,
    WebhookConfig,
    WebhookDispatcher,
    backoff,
    sign,
    verify,
)
from mailprime.storage.sql import SqlStore, open_store
from tests.support.instance import refusing_port, wait_for
from tests.support.webhook_receiver import webhook_receiver

FAST = WebhookConfig(poll_interval=0.05, retry_base=0.05, retry_max=0.1, timeout=5.0,
                     max_attempts=5)


def test_signature_is_hmac_of_timestamp_and_body_and_verifies() -> None:
    body = b'{"id":1}'
    header = sign("whsec_k", 1700000000, body)
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("whsec_k", header, body, now=1700000100)
    assert verify("whsec_k", f"{header},v1=00", body, now=1700000000)  # any v1 may match
    assert not verify("whsec_k", header, body + b" ", now=1700000000)  # body changed
    assert not verify("other", header, body, now=1700000000)  # wrong secret
    assert not verify("whsec_k", header, body, now=1700000301)  # too old: a replay
    for bad in ("", "t=x,v1=ab", f"v1={expected}", "t=1700000000", "t=1,t=2,v1=aa"):
        assert not verify("whsec_k", bad, body, now=1700000000), bad


def test_backoff_doubles_from_a_minute_to_a_day() -> None:
    cfg = WebhookConfig()
    assert [backoff(n, cfg) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff(12, cfg) == 86400 and backoff(40, cfg) == 86400


async def final_log(store: SqlStore, hook: WebhookId) -> list[WebhookDelivery]:
    """The webhook's log once no delivery is pending (the dispatcher writes it after the
    receiver has answered)."""

    async def settled() -> list[WebhookDelivery] | None:
        rows = list(await store.list_webhook_deliveries(hook))
        return rows if rows and all(r.status is not DeliveryStatus.PENDING for r in rows) else None

    return await wait_for(settled, 10.0, "the delivery log to settle")


@asynccontextmanager
async def store_at(tmp: Path) -> AsyncIterator[SqlStore]:
    store = await open_store(f"sqlite:///{tmp / 'hooks.db'}", spool_dir=tmp / "spool",
                             inline_max=64 * 1024)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def dispatching(store: SqlStore, client: HttpClient,
                      config: WebhookConfig = FAST) -> AsyncIterator[WebhookDispatcher]:
    dispatcher = WebhookDispatcher(store, client, SystemClock(), config)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_signed_events_are_posted_and_retried_until_the_receiver_takes_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with store_at(tmp_path) as store, webhook_receiver([500, 503]) as receiver:
            await store.append(EventKind.BOUNCED, QueueId("OLD"), "old@b.test")  # not replayed
            hook = await store.add_webhook(receiver.url, "whsec_test", frozenset({"delivered"}),
                                           active=True, description="",
                                           created_at=SystemClock().now())
            await store.append(EventKind.OPENED, QueueId("Q1"), "ann@b.test")  # not subscribed
            await store.append(EventKind.DELIVERED, QueueId("Q1"), "ann@b.test", "250 ok",
                               (("mx", "mx.b.test"),))
            async with dispatching(store, HttpClient()):
                got = await receiver.wait(3)
                (log,) = await final_log(store, hook.id)
            assert receiver.answered == [500, 503, 200]
            for request in got:  # the same event each time, each signed anew
                assert request.path == "/hook"
                assert request.headers["content-type"] == "application/json"
                assert verify("whsec_test", request.headers[SIGNATURE_HEADER.lower()],
                              request.body, now=time.time())
                assert request.headers["x-mailprime-event"] == "delivered"
            event = json.loads(got[0].body)
            assert {k: event[k] for k in ("type", "queue_id", "recipient", "attrs")} == {
                "type": "delivered", "queue_id": "Q1", "recipient": "ann@b.test",
                "attrs": {"mx": "mx.b.test"}}
            assert isinstance(event["id"], int) and event["at"].endswith("+00:00")
            assert all(json.loads(r.body)["id"] == event["id"] for r in got)
            assert (log.status, log.attempts, log.last_status_code, log.last_response) == (
                DeliveryStatus.DELIVERED, 3, 200, "ok")
            assert log.next_attempt_at is None

    asyncio.run(scenario())


def test_a_receiver_that_never_answers_well_fails_after_max_attempts(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = WebhookConfig(poll_interval=0.05, retry_base=0.05, retry_max=0.05, timeout=5.0,
                               max_attempts=3)
        async with store_at(tmp_path) as store, webhook_receiver([500] * 10) as receiver:
            now = SystemClock().now()
            hook = await store.add_webhook(receiver.url, "s", frozenset({"bounced"}), active=True,
                                           description="", created_at=now)
            with refusing_port() as port:
                down = await store.add_webhook(f"http://127.0.0.1:{port}/x", "s",
                                               frozenset({"bounced"}), active=True,
                                               description="", created_at=now)
                await store.append(EventKind.BOUNCED, QueueId("Q2"), "bob@b.test")
                async with dispatching(store, HttpClient(), config):
                    await receiver.wait(3)
                    (log,) = await final_log(store, hook.id)
                    await final_log(store, down.id)
            assert log.status is DeliveryStatus.FAILED
            assert (log.attempts, log.last_status_code, log.last_response) == (3, 500, "try later")
            (refused,) = await store.list_webhook_deliveries(down.id)
            assert refused.attempts == 3 and refused.last_status_code is None
            assert "ConnectionRefused" in refused.last_response
            assert len(receiver.received) == 3  # no fourth attempt

    asyncio.run(scenario())


def test_https_receivers_are_verified_against_the_configured_ca(tmp_path: Path,
                                                                ca: trustme.CA) -> None:
    async def scenario() -> None:
        cert = ca.issue_cert("localhost")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_ctx)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        async with store_at(tmp_path) as store, webhook_receiver(ssl_context=server_ctx) as receiver:
            hook = await store.add_webhook(receiver.url, "s", frozenset({"clicked"}), active=True,
                                           description="", created_at=SystemClock().now())
            assert receiver.url.startswith("https://localhost:")
            await store.append(EventKind.CLICKED, QueueId("Q3"), "c@b.test", "",
                               (("url", "https://shop.test/"),))
            # Without the test CA the certificate is not trusted: the attempt fails, logged.
            # (A retry a second later, so that this round makes exactly one attempt.)
            slower = WebhookConfig(poll_interval=0.05, retry_base=1.0, retry_max=1.0)
            untrusting = WebhookDispatcher(store, HttpClient(verifying_context()),
                                           SystemClock(), slower)
            assert await untrusting.run_once() == 1
            (log,) = await store.list_webhook_deliveries(hook.id)
            assert log.status is DeliveryStatus.PENDING and "CERTIFICATE_VERIFY_FAILED" in log.last_response
            async with dispatching(store, HttpClient(verifying_context(str(tmp_path / "ca.pem"))),
                                   slower):
                (request,) = await receiver.wait(1)
                (log,) = await final_log(store, hook.id)
            assert json.loads(request.body)["attrs"] == {"url": "https://shop.test/"}
            assert log.status is DeliveryStatus.DELIVERED and log.attempts == 2

    asyncio.run(scenario())
