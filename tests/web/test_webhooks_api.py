"""/api/v1/webhooks over a real socket: create (the secret shown once), list, show, change,
delete, the delivery log, scopes, and validation as problems."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.domain.messaging import DeliveryStatus, WebhookId
from tests.web.conftest import live_web

PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_webhook_crud_and_its_delivery_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key = bearer(await web.key("webhooks:*"))
            created = await web.client.post("/api/v1/webhooks", headers=key, json={
                "url": "https://crm.example/hooks?x=1", "events": ["opened", "clicked"],
                "description": "CRM"})
            assert created.status_code == 201, created.text
            hook = created.json()
            assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
            assert (hook["events"], hook["active"], hook["description"]) == (
                ["clicked", "opened"], True, "CRM")
            listed = (await web.client.get("/api/v1/webhooks", headers=key)).json()
            assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
            shown = await web.client.get(f"/api/v1/webhooks/{hook['id']}", headers=key)
            assert shown.status_code == 200 and "secret" not in shown.json()
            patched = await web.client.patch(f"/api/v1/webhooks/{hook['id']}", headers=key,
                                             json={"events": ["*"], "active": False})
            assert patched.status_code == 200
            assert "delivered" in patched.json()["events"] and patched.json()["active"] is False
            assert patched.json()["url"] == "https://crm.example/hooks?x=1"
            # The log: one delivery made by the store as the dispatcher would.
            await web.store.update_webhook(WebhookId(hook["id"]), url="http://h/", active=True,
                                           events=frozenset({"bounced"}), description="")
            await web.store.append(EventKind.BOUNCED, QueueId("Q9"), "x@b.test")
            now = web.clock.now()
            await web.store.enqueue_webhook_events(now, 10)
            (job,) = await web.store.claim_webhook_deliveries(now, 10, now + timedelta(minutes=1))
            await web.store.record_webhook_attempt(job.delivery_id, at=now,
                                                   status=DeliveryStatus.PENDING, attempts=1,
                                                   next_attempt_at=now + timedelta(minutes=1),
                                                   status_code=502, response="bad gateway")
            log = await web.client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=key)
            (row,) = log.json()
            assert (row["type"], row["status"], row["attempts"], row["last_status_code"],
                    row["last_response"]) == ("bounced", "pending", 1, 502, "bad gateway")
            assert (await web.client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?status=failed",
                                         headers=key)).json() == []
            deleted = await web.client.delete(f"/api/v1/webhooks/{hook['id']}", headers=key)
            assert deleted.status_code == 204
            for method in ("GET", "DELETE"):
                gone = await web.client.request(method, f"/api/v1/webhooks/{hook['id']}", headers=key)
                assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM

    asyncio.run(scenario())


def test_webhook_validation_and_scopes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key = bearer(await web.key("webhooks:write", "webhooks:read"))
            for body in ({"url": "ftp://x.test/", "events": ["opened"]},
                         {"url": "https://x.test/#frag", "events": ["opened"]},
                         {"url": "https://x.test:99999/", "events": ["opened"]},
                         {"url": "https://x.test/ a", "events": ["opened"]},
                         {"url": "https://x.test/", "events": ["sent"]},
                         {"url": "https://x.test/", "events": []},
                         {"url": "https://x.test/" + "a" * 3000, "events": ["opened"]}):
                got = await web.client.post("/api/v1/webhooks", headers=key, json=body)
                assert got.status_code == 422, body
                assert got.headers["content-type"] == PROBLEM
            reader = bearer(await web.key("webhooks:read", name="reader"))
            refused = await web.client.post("/api/v1/webhooks", headers=reader, json={
                "url": "https://x.test/", "events": ["opened"]})
            assert refused.status_code == 403
            assert (await web.client.get("/api/v1/webhooks", headers=reader)).status_code == 200
            assert (await web.client.get("/api/v1/webhooks")).status_code == 401

    asyncio.run(scenario())
