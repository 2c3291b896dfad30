"""POST /api/v1/messages over a real socket (tests/web/conftest.py): the message queued, DKIM-
signed, with per-recipient status; Idempotency-Key replay, reuse and in-progress; and every
refusal as a problem document, with nothing queued."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim

from mailprime.domain.clock import SystemClock
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import Priority
from mailprime.domain.templates import TemplateFields
from mailprime.services.dkim_keys import DkimKeys
from mailprime.web.messages_api import MAX_RECIPIENTS, MessageIn, request_hash
from tests.web.conftest import LiveWeb, live_web

PROBLEM = "application/problem+json"
FROM = "billing@a.test"


def bearer(key: str, idem: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return headers


async def ready(web: LiveWeb, *, dkim_key: bool = True) -> tuple[str, dict[str, str]]:
    """a.test local (with a DKIM key), a key with messages:send; returns (key, TXT records)."""
    web.clock.current = datetime.now(UTC)  # dkimpy refuses signatures dated in the future
    await web.store.add_domain("a.test")
    records: dict[str, str] = {}
    if dkim_key:
        keys = DkimKeys(web.store, SystemClock())
        await keys.generate("a.test")
        records = {r.name: r.record for r in await keys.records("a.test")}
    return await web.key("messages:send"), records


async def queued(web: LiveWeb, queue_id: str) -> tuple[bytes, list[str], Priority]:
    message = await web.store.get_message(QueueId(queue_id))
    assert message is not None
    recipients = await web.store.get_recipients(QueueId(queue_id))
    return (await web.store.read_blob(message.blob_id), sorted(r.address for r in recipients),
            message.priority)


def verify(content: bytes, records: dict[str, str]) -> bool:
    answers = {f"{name}.".encode(): txt.encode() for name, txt in records.items()}
    return bool(dkim.verify(content, dnsfunc=lambda name, timeout=5: answers.get(name)))


BASIC: dict[str, Any] = {
    "from": {"email": FROM, "name": "Billing Dept"}, "to": ["ann@b.test"],
    "cc": [{"email": "bob@b.test", "name": "Bób"}], "bcc": ["audit@c.test"],
    "reply_to": "help@a.test", "subject": "Your receipt – №42",
    "text": "Thanks.\n", "html": "<p>Thanks.</p>",
    "headers": {"X-Order": "42", "In-Reply-To": "<o42@shop.a.test>"}, "tags": ["receipt", "shop"],
    "attachments": [{"filename": "r.pdf", "content_type": "application/pdf",
                     "content": base64.b64encode(b"%PDF-1.4 fake").decode()}],
}


def test_a_message_is_queued_signed_and_transactional(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, records = await ready(web)
            got = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key))
            assert got.status_code == 202, got.text
            body = got.json()
            assert body["recipients"] == [
                {"email": "ann@b.test", "status": "queued", "reason": ""},
                {"email": "bob@b.test", "status": "queued", "reason": ""},
                {"email": "audit@c.test", "status": "queued", "reason": ""}]
            content, rcpts, priority = await queued(web, body["id"])
            assert rcpts == ["ann@b.test", "audit@c.test", "bob@b.test"]
            assert priority is Priority.TRANSACTIONAL
            assert verify(content, records)
            msg = email.message_from_bytes(content, policy=email.policy.default)
            assert msg["From"] == "Billing Dept <billing@a.test>"
            assert msg["Subject"] == "Your receipt – №42" and msg["Bcc"] is None
            assert msg["Message-ID"] == body["message_id"] and msg["X-Order"] == "42"
            assert msg["Reply-To"] == "help@a.test" and "Bób" in str(msg["Cc"])
            assert msg["X-Mailprime-Tags"] == "receipt, shop"
            parts = [p.get_content_type() for p in msg.walk()]
            assert parts == ["multipart/mixed", "multipart/alternative", "text/plain",
                             "text/html", "application/pdf"]
            attachment = next(msg.iter_attachments())
            assert attachment.get_filename() == "r.pdf"
            assert attachment.get_content() == b"%PDF-1.4 fake"
            assert b"\r\n" in content and b"\n" not in content.replace(b"\r\n", b"")

    asyncio.run(scenario())


def test_idempotency_key_replays_refuses_reuse_and_is_per_api_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            first = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key, "o-42"))
            assert first.status_code == 202
            again = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key, "o-42"))
            assert (again.status_code, again.json()) == (202, first.json())
            assert again.headers["idempotent-replayed"] == "true"
            assert len(await web.store.list_queue()) == 1  # sent once
            other = await web.client.post("/api/v1/messages", json={**BASIC, "subject": "x"},
                                          headers=bearer(key, "o-42"))
            assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
            assert other.json()["type"] == "urn:mailprime:problem:idempotency-key-reused"
            # Another API key's "o-42" is its own.
            key2 = await web.key("messages:send", name="second")
            theirs = await web.client.post("/api/v1/messages", json=BASIC,
                                           headers=bearer(key2, "o-42"))
            assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
            # Without a key, every POST sends.
            for _ in range(2):
                assert (await web.client.post("/api/v1/messages", json=BASIC,
                                              headers=bearer(key))).status_code == 202
            assert len(await web.store.list_queue()) == 4
            # While the first request with a key is still running, a second gets 409.
            api_key = next(k for k in await web.store.list_api_keys() if k.name == "test")
            now = web.clock.now()
            await web.store.claim_idempotency_key(api_key.id, "busy", "h", now=now,
                                                  stale_before=now, expired_before=now)
            busy = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key, "busy"))
            assert busy.status_code == 422  # another body holds the key (409 when the same: below)
            # A refused request releases its key: fixed, the same key sends.
            bad = {**BASIC, "to": ["nobody-at-all"]}
            assert (await web.client.post("/api/v1/messages", json=bad,
                                          headers=bearer(key, "fix-me"))).status_code == 422
            fixed = await web.client.post("/api/v1/messages", json=BASIC,
                                          headers=bearer(key, "fix-me"))
            assert fixed.status_code == 202
            bad_key = await web.client.post("/api/v1/messages", json=BASIC,
                                            headers=bearer(key, "tab\tin key"))
            assert bad_key.status_code == 422

    asyncio.run(scenario())


def test_in_progress_key_of_the_same_body_is_409(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            api_key = (await web.store.list_api_keys())[0]
            now = web.clock.now()
            digest = request_hash(MessageIn.model_validate(BASIC))
            await web.store.claim_idempotency_key(api_key.id, "k", digest, now=now,
                                                  stale_before=now, expired_before=now)
            busy = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key, "k"))
            assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
            assert busy.json()["type"] == "urn:mailprime:problem:idempotency-key-in-progress"
            # A minute later the request is taken to have died: a retry takes the key over.
            web.clock.advance(61)
            taken = await web.client.post("/api/v1/messages", json=BASIC, headers=bearer(key, "k"))
            assert taken.status_code == 202
            assert await web.store.list_queue() != []

    asyncio.run(scenario())


def test_suppressed_recipients_are_dropped_and_all_suppressed_is_422(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            await web.store.suppress(Suppression("bob@b.test", "", SuppressionReason.HARD_BOUNCE,
                                                 web.clock.now(), "550 5.1.1"))
            got = await web.client.post("/api/v1/messages", headers=bearer(key), json={
                "from": FROM, "to": ["ann@b.test", "Bob@B.test"], "subject": "s", "text": "t"})
            assert got.status_code == 202
            statuses = {r["email"]: (r["status"], r["reason"]) for r in got.json()["recipients"]}
            assert statuses["ann@b.test"] == ("queued", "")
            assert statuses["Bob@b.test"][0] == "suppressed"
            assert "hard bounce" in statuses["Bob@b.test"][1]
            _, rcpts, _ = await queued(web, got.json()["id"])
            assert rcpts == ["ann@b.test"]
            none = await web.client.post("/api/v1/messages", headers=bearer(key), json={
                "from": FROM, "to": ["bob@b.test"], "subject": "s", "text": "t"})
            assert none.status_code == 422 and "bob@b.test" in none.json()["detail"]
            assert len(await web.store.list_queue()) == 1

    asyncio.run(scenario())


def test_a_template_renders_with_the_data(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web)
            template = await web.store.create_template(TemplateFields(
                "reset", "Reset for {{ name }}", "<p>Code {{ attributes.code }}</p>"))
            got = await web.client.post("/api/v1/messages", headers=bearer(key), json={
                "from": FROM, "to": [{"email": "ann@b.test", "name": "Ann"}],
                "template_id": template.id, "data": {"code": "X7"}})
            assert got.status_code == 202, got.text
            content, _, _ = await queued(web, got.json()["id"])
            msg = email.message_from_bytes(content, policy=email.policy.default)
            assert msg["Subject"] == "Reset for Ann"
            body = msg.get_body(("html",))
            assert body is not None and "Code X7" in body.get_content()
            missing = await web.client.post("/api/v1/messages", headers=bearer(key), json={
                "from": FROM, "to": ["ann@b.test"], "template_id": 999})
            assert missing.status_code == 422
            assert missing.json()["errors"][0]["field"] == "body.template_id"

    asyncio.run(scenario())


def test_refusals_are_problems_and_queue_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, max_request_size=16 * 1024) as web:
            key, _ = await ready(web)
            base = {"from": FROM, "to": ["ann@b.test"], "subject": "s", "text": "t"}
            cases: list[tuple[dict[str, Any], int, str]] = [
                ({**base, "subject": "hi\r\nBcc: victim@x.test"}, 422, "body.subject"),
                ({**base, "headers": {"X-A": "v\nBcc: victim@x.test"}}, 422, "body.headers.X-A"),
                ({**base, "headers": {"Bad Name": "v"}}, 422, "body.headers.Bad Name"),
                ({**base, "headers": {"DKIM-Signature": "v=1"}}, 422, "body.headers.DKIM-Signature"),
                ({**base, "headers": {"received": "forged"}}, 422, "body.headers.received"),
                ({**base, "to": ["not an address"]}, 422, "body.to.0"),
                ({**base, "to": []}, 422, "body.to"),
                ({**base, "from": {"email": "x@a.test", "name": "A\r\nB"}}, 422, "body.from"),
                ({**base, "from": "me@elsewhere.test"}, 422, "body.from"),
                ({**base, "text": None}, 422, "body"),
                ({**base, "subject": None}, 422, "body.subject"),
                ({**base, "to": [f"r{i}@b.test" for i in range(MAX_RECIPIENTS + 1)]}, 422, "body.to"),
                ({**base, "cc": [f"c{i}@b.test" for i in range(MAX_RECIPIENTS)]}, 422, "body"),
                ({**base, "tags": ["has space"]}, 422, "body.tags.0"),
                ({**base, "attachments": [{"filename": "a.exe", "content": "AAAA"}]}, 422,
                 "body.attachments.0"),
                ({**base, "attachments": [{"filename": "a.txt", "content": "@@not base64"}]},
                 422, "body.attachments.0.content"),
                ({**base, "attachments": [{"filename": "a.txt", "content_type": "text",
                                           "content": "AAAA"}]}, 422,
                 "body.attachments.0.content_type"),
                ({**base, "unknown": 1}, 422, "body.unknown"),
            ]
            for payload, status, field in cases:
                got = await web.client.post("/api/v1/messages", json=payload, headers=bearer(key))
                assert got.status_code == status, (field, got.text)
                assert got.headers["content-type"] == PROBLEM
                fields = [e["field"] for e in got.json().get("errors", [])]
                assert any(f.startswith(field) for f in fields), (field, got.json())
            # Too large: the request body limit (413 before it is read) ...
            huge = {**base, "text": "x" * 20_000}
            assert (await web.client.post("/api/v1/messages", json=huge,
                                          headers=bearer(key))).status_code == 413
            # ... and the message size limit of the server (RFC 1870), checked once built.
            web.settings.limits.max_message_size = 2000
            big = {**base, "text": "y" * 5000}
            too_big = await web.client.post("/api/v1/messages", json=big, headers=bearer(key))
            assert too_big.status_code == 413 and "RFC 1870" in too_big.json()["detail"]
            assert await web.store.list_queue() == []
            # Scope: a key without messages:send is 403.
            other = await web.key("suppressions:read", name="ro")
            assert (await web.client.post("/api/v1/messages", json=base,
                                          headers=bearer(other))).status_code == 403

    asyncio.run(scenario())


def test_a_from_domain_without_a_dkim_key_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            key, _ = await ready(web, dkim_key=False)
            got = await web.client.post("/api/v1/messages", headers=bearer(key), json={
                "from": FROM, "to": ["ann@b.test"], "subject": "s", "text": "t"})
            assert got.status_code == 422 and "DKIM" in got.json()["detail"]

    asyncio.run(scenario())
