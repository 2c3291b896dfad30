"""Transactional sending and webhooks on a real instance (runtime's wiring, sandbox delivery):
a webhook made over the API, a message POSTed twice with one Idempotency-Key (queued once,
answered the same), the message in the sandbox mailbox DKIM-signed, and the signed "delivered"
event at a receiver on loopback, with its delivery in the log."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import dkim
import httpx
import pytest
import trustme

from mailprime.domain.api_keys import new_api_key
from mailprime.domain.clock import SystemClock
from mailprime.services.dkim_keys import DkimKeys
from mailprime.services.webhooks import SIGNATURE_HEADER, verify
from tests.support.instance import running_instance, wait_for
from tests.support.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow

USER = "postmaster@a.test"


def test_a_message_is_sent_once_and_its_delivery_reaches_the_webhook(tmp_path: Path,
                                                                      ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with (running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                     accounts={USER: "pw-123456789"}, http=True,
                                     sandbox=True) as inst,
                    webhook_receiver() as receiver):
            store = inst.server.store
            keys = DkimKeys(store, SystemClock())
            await keys.generate("a.test")
            records = {f"{r.name}.".encode(): r.record.encode() for r in await keys.records("a.test")}
            made = new_api_key()
            await store.add_api_key("app", made.prefix, made.secret_hash,
                                    frozenset({"messages:send", "webhooks:*"}), datetime.now(UTC))
            auth = {"Authorization": f"Bearer {made.text}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{inst.port('http')}",
                                         timeout=10) as client:
                created = await client.post("/api/v1/webhooks", headers=auth, json={
                    "url": receiver.url, "events": ["delivered", "bounced"]})
                assert created.status_code == 201, created.text
                hook = created.json()
                assert hook["secret"].startswith("whsec_") and hook["events"] == ["bounced", "delivered"]
                message = {"from": {"email": "app@a.test", "name": "App"},
                           "to": ["customer@b.test"], "subject": "Your code", "text": "123456\n"}
                headers = {**auth, "Idempotency-Key": "signup-7"}
                first = await client.post("/api/v1/messages", headers=headers, json=message)
                second = await client.post("/api/v1/messages", headers=headers, json=message)
                assert first.status_code == second.status_code == 202, first.text
                assert first.json() == second.json()
                queue_id = first.json()["id"]

                (captured,) = await inst.wait_mailbox(USER, 1, name="Sandbox")
                content = captured[1]
                assert b"Subject: Your code" in content
                signed = content.split(b"\r\n", 1)[1]  # the sandbox's own note goes first
                assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name))

                (request,) = await receiver.wait(1)
                assert verify(hook["secret"], request.headers[SIGNATURE_HEADER.lower()],
                              request.body, now=time.time())
                event = json.loads(request.body)
                assert (event["type"], event["queue_id"], event["recipient"]) == (
                    "delivered", queue_id, "customer@b.test")

                async def logged() -> list[dict[str, object]] | None:
                    got = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries",
                                           headers=auth)
                    rows: list[dict[str, object]] = got.json()
                    return rows if rows and rows[0]["status"] == "delivered" else None

                (row,) = await wait_for(logged, 10.0, "the delivery log")
                assert (row["type"], row["attempts"], row["last_status_code"]) == (
                    "delivered", 1, 200)
            # Exactly one message went out for the two POSTs.
            assert len(await inst.mailbox(USER, "Sandbox")) == 1

    asyncio.run(scenario())
