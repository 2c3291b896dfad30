"""/api/v1/campaigns over a real socket, on a store seeded with an audience, a template and
DKIM keys (tests/marketing/campaign_fixtures.py): the lifecycle draft -> start -> pause ->
resume -> (sent by a real dispatcher) and draft -> scheduled -> cancelled, with PATCH and
DELETE refused where the state table says so; pre-flight refusals as field problems; header
injection; scopes; test sends; the send log's keyset pages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mailprime.domain.ids import CampaignId
from mailprime.marketing.dispatch import DispatchConfig, Dispatcher
from mailprime.services.dkim_keys import DkimSigner
from tests.marketing.campaign_fixtures import BASE_URL, POSTAL, seed
from tests.web.conftest import LiveWeb, live_web

PROBLEM = "application/problem+json"
API = "/api/v1/campaigns"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _draft_body(web: LiveWeb, name: str = "may", **extra: Any) -> dict[str, Any]:
    template = await web.store.get_template_by_name("news")
    news = await web.store.get_list("news-April news")
    assert template is not None and news is not None
    return {"name": name, "template_id": template.id, "list_ids": [news.id],
            "from_address": "news@a.test", "from_name": "A News", **extra}


def _fields(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


def test_lifecycle_draft_start_pause_resume_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=3, excluded_each=1)
            h = bearer(await web.key("campaigns:*"))
            made = await web.client.post(API, headers=h, json=await _draft_body(web))
            assert made.status_code == 201, made.text
            c = made.json()
            assert (c["status"], c["from_name"], c["postal_address"], c["track_opens"],
                    c["pause_reason"]) == ("draft", "A News", POSTAL, True, None)
            url = f"{API}/{c['id']}"
            dup = await web.client.post(API, headers=h, json=await _draft_body(web))
            assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM

            # Listing: keyset pages by id, and the status filter.
            first = (await web.client.get(API, headers=h, params={"limit": 1})).json()
            assert [x["name"] for x in first["items"]] == ["April news"]
            second = (await web.client.get(API, headers=h, params={
                "limit": 1, "after": first["next_after"]})).json()
            assert [x["id"] for x in second["items"]] == [c["id"]]
            assert second["next_after"] is None
            drafts = (await web.client.get(API, headers=h, params={"status": "draft"})).json()
            assert len(drafts["items"]) == 2

            # PATCH while a draft: absent fields stay, null clears the nullable ones.
            patched = await web.client.patch(url, headers=h, json={
                "rate_per_minute": 600, "reply_to": "Help@A.test", "subject": "May {{ name }}"})
            assert patched.status_code == 200, patched.text
            assert (patched.json()["rate_per_minute"], patched.json()["reply_to"],
                    patched.json()["from_name"]) == (600, "Help@a.test", "A News")
            cleared = await web.client.patch(url, headers=h, json={"subject": None})
            assert cleared.json()["subject"] is None
            assert cleared.json()["reply_to"] == "Help@a.test"

            early = await web.client.post(f"{url}/resume", headers=h)  # a start, not a resume
            assert early.status_code == 409 and "only a paused campaign is resumed" \
                in early.json()["detail"]
            ready = await web.client.post(f"{url}/preflight", headers=h)
            assert ready.status_code == 200 and ready.json()["ok"] is True, ready.text
            started = await web.client.post(f"{url}/start", headers=h)
            assert started.status_code == 200, started.text
            assert started.json()["campaign"]["status"] == "sending"
            assert started.json()["campaign"]["started_at"] is not None

            # Started: settings are fixed, it cannot be deleted or started again.
            late = await web.client.patch(url, headers=h, json={"from_name": "Late"})
            assert late.status_code == 409 and late.headers["content-type"] == PROBLEM
            assert "is sending: only a draft or a scheduled campaign can be changed" \
                in late.json()["detail"]
            gone = await web.client.delete(url, headers=h)
            assert gone.status_code == 409 and "cancel it instead" in gone.json()["detail"]
            again = await web.client.post(f"{url}/start", headers=h)
            assert again.status_code == 409

            paused = await web.client.post(f"{url}/pause", headers=h,
                                           json={"detail": "checking the links"})
            assert paused.status_code == 200, paused.text
            assert (paused.json()["status"], paused.json()["pause_reason"],
                    paused.json()["pause_detail"]) == ("paused", "operator",
                                                       "checking the links")
            twice = await web.client.post(f"{url}/pause", headers=h)
            assert twice.status_code == 409
            assert "is paused: it cannot become paused" in twice.json()["detail"]
            resumed = await web.client.post(f"{url}/resume", headers=h)
            assert resumed.json()["status"] == "sending" and resumed.json()["pause_reason"] is None

            # The server's dispatcher sends it (here run in the test's loop).
            dispatcher = Dispatcher(web.store, DkimSigner(web.store, web.clock), web.signer,
                                    DispatchConfig(base_url=BASE_URL), clock=web.clock)
            assert (await dispatcher.run(CampaignId(c["id"]))).value == "sent"
            detail = (await web.client.get(url, headers=h)).json()
            assert detail["status"] == "sent" and detail["finished_at"] is not None
            counters = detail["counters"]
            assert (counters["queued"], counters["sent"], counters["pending"],
                    counters["delivered"], counters["opened"]) == (3, 3, 0, 0, 0)
            emails: list[str] = []
            after = None
            for _ in range(10):
                params: dict[str, Any] = {"limit": 2}
                if after is not None:
                    params["after"] = after
                page = (await web.client.get(f"{url}/sends", headers=h, params=params)).json()
                emails += [s["email"] for s in page["items"]]
                assert all(s["status"] == "queued" and s["queue_id"] for s in page["items"])
                after = page["next_after"]
                if after is None:
                    break
            assert sorted(emails) == sorted(seeded.confirmed)
            none_skipped = (await web.client.get(f"{url}/sends", headers=h,
                                                 params={"status": "skipped"})).json()
            assert none_skipped == {"items": [], "next_after": None}

            final = await web.client.post(f"{url}/cancel", headers=h)
            assert final.status_code == 409
            assert "is sent: it cannot become cancelled (allowed: none: it is final)" \
                in final.json()["detail"]

    asyncio.run(scenario())


def test_schedule_patch_cancel_delete_and_preflight_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=2, excluded_each=0)
            h = bearer(await web.key("campaigns:*"))
            url = f"{API}/{seeded.campaign.id}"
            later = await web.client.post(f"{url}/start", headers=h,
                                          json={"at": "2031-05-01T09:00:00"})
            assert later.status_code == 200, later.text
            assert later.json()["campaign"]["status"] == "scheduled"
            assert later.json()["campaign"]["scheduled_at"].startswith("2031-05-01T09:00:00")
            # Scheduled: still editable, still scheduled, and pre-flighted again.
            edited = await web.client.patch(url, headers=h, json={"from_name": "May News"})
            assert edited.status_code == 200, edited.text
            assert (edited.json()["status"], edited.json()["from_name"]) == (
                "scheduled", "May News")
            unsigned = await web.client.patch(url, headers=h,
                                              json={"from_address": "news@c.test"})
            assert unsigned.status_code == 422, unsigned.text
            body = unsigned.json()
            assert body["type"] == "urn:mailprime:problem:preflight"
            assert "preflight.dkim" in _fields(unsigned)
            assert {p["code"] for p in body["problems"]} >= {"dkim", "from-domain"}
            shown = (await web.client.get(url, headers=h)).json()
            assert shown["from_address"] == "news@a.test"  # the refused change is not stored
            cancelled = await web.client.post(f"{url}/cancel", headers=h)
            assert cancelled.json()["status"] == "cancelled"
            assert (await web.client.delete(url, headers=h)).status_code == 409

            # A draft that cannot start: 422 listing every error, nothing moves.
            stray = (await web.client.post(API, headers=h, json=await _draft_body(
                web, "stray", from_address="news@c.test"))).json()
            refused = await web.client.post(f"{API}/{stray['id']}/start", headers=h)
            assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
            assert "preflight.dkim" in _fields(refused)
            assert all(p["severity"] in ("error", "warning") for p in refused.json()["problems"])
            check = (await web.client.post(f"{API}/{stray['id']}/preflight", headers=h)).json()
            assert check["ok"] is False and any(p["code"] == "dkim" for p in check["problems"])
            assert (await web.client.get(f"{API}/{stray['id']}",
                                         headers=h)).json()["status"] == "draft"
            # ... and a draft is deleted for good.
            assert (await web.client.delete(f"{API}/{stray['id']}", headers=h)).status_code == 204
            assert (await web.client.get(f"{API}/{stray['id']}", headers=h)).status_code == 404
            assert (await web.client.delete(f"{API}/{stray['id']}", headers=h)).status_code == 404

    asyncio.run(scenario())


def test_field_problems_header_injection_and_scopes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=1, excluded_each=0)
            h = bearer(await web.key("campaigns:*"))
            for field in ("name", "from_name", "subject", "postal_address"):
                injected = await web.client.post(API, headers=h, json=await _draft_body(
                    web, **{field: "x\r\nBcc: victim@example.com"}))
                assert injected.status_code == 422, (field, injected.text)
                assert _fields(injected) == [f"body.{field}"]
            patched = await web.client.patch(f"{API}/{seeded.campaign.id}", headers=h,
                                             json={"subject": "Hi\nBcc: v@example.com"})
            assert patched.status_code == 422 and _fields(patched) == ["body.subject"]
            cases: list[tuple[dict[str, Any], str]] = [
                ({"template_id": 999}, "body.template_id"),
                ({"list_ids": [999]}, "body.list_ids"),
                ({"segment_id": 999}, "body.segment_id"),
                ({"from_address": "not an address"}, "body.from_address"),
                ({"reply_to": "nope@"}, "body.reply_to"),
                ({"rate_per_minute": -1}, "body.rate_per_minute"),
                ({"list_ids": []}, "body.list_ids")]
            for extra, where in cases:
                bad = await web.client.post(API, headers=h, json=await _draft_body(
                    web, "bad", **extra))
                assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
                assert _fields(bad) == [where], (extra, bad.text)
            body = await _draft_body(web, "twice")
            twice = await web.client.post(API, headers=h, json={
                **body, "list_ids": body["list_ids"] * 2})
            assert _fields(twice) == ["body.list_ids"]
            missing = await web.client.get(f"{API}/424242", headers=h)
            assert missing.status_code == 404 and missing.json()["detail"] == "no campaign #424242"
            odd_time = await web.client.post(f"{API}/{seeded.campaign.id}/start", headers=h,
                                             json={"at": "9999-12-31T23:00:00-20:00"})
            assert odd_time.status_code == 422 and _fields(odd_time) == ["body.at"]

            # Scopes: read, write and send are separate; no key is a 401.
            reader = bearer(await web.key("campaigns:read", name="reader"))
            writer = bearer(await web.key("campaigns:read", "campaigns:write", name="writer"))
            url = f"{API}/{seeded.campaign.id}"
            assert (await web.client.get(url, headers=reader)).status_code == 200
            assert (await web.client.post(f"{url}/preflight", headers=reader)).status_code == 200
            assert (await web.client.post(API, headers=reader, json=await _draft_body(
                web, "r"))).status_code == 403
            assert (await web.client.post(f"{url}/start", headers=writer)).status_code == 403
            assert (await web.client.post(f"{url}/test", headers=writer, json={
                "to": ["a@example.com"]})).status_code == 403
            refused = await web.client.patch(url, headers=reader, json={"from_name": "x"})
            assert refused.status_code == 403
            assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
            assert (await web.client.get(API)).status_code == 401
            assert (await web.client.patch(url, headers=writer,
                                           json={"from_name": "ok"})).status_code == 200

    asyncio.run(scenario())


def test_test_sends(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=1, excluded_each=0)
            h = bearer(await web.key("campaigns:*"))
            url = f"{API}/{seeded.campaign.id}/test"
            sent = await web.client.post(url, headers=h, json={
                "to": ["Boss@C.test", seeded.confirmed[0]]})
            assert sent.status_code == 202, sent.text
            queued = sent.json()["queued"]
            assert [q["email"] for q in queued] == ["Boss@c.test", seeded.confirmed[0]]
            in_queue = {m.id: m for m, _ in await web.store.list_queue()}
            assert {q["queue_id"] for q in queued} <= set(in_queue)
            assert (await web.store.campaign_counters(seeded.campaign.id)).queued == 0
            too_many = await web.client.post(url, headers=h, json={
                "to": [f"u{n}@c.test" for n in range(21)]})
            assert too_many.status_code == 422 and _fields(too_many) == ["body.to"]
            bad = await web.client.post(url, headers=h, json={"to": ["ok@c.test", "nope"]})
            assert bad.status_code == 422 and _fields(bad) == ["body.to.1"]
            none = await web.client.post(url, headers=h, json={"to": []})
            assert none.status_code == 422

    asyncio.run(scenario())


def test_changing_a_scheduled_campaign_takes_the_send_scope(tmp_path: Path) -> None:
    """What a scheduled campaign is changed to (lists, template, From, subject) is what the
    runner sends at its time: campaigns:write alone changes a draft, not a scheduled one."""

    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=1, excluded_each=0)
            url = f"{API}/{seeded.campaign.id}"
            writer = bearer(await web.key("campaigns:read", "campaigns:write", name="writer"))
            sender = bearer(await web.key("campaigns:write", "campaigns:send", name="sender"))
            draft = await web.client.patch(url, headers=writer, json={"from_name": "Draft"})
            assert draft.status_code == 200, draft.text
            scheduled = await web.client.post(f"{url}/start", headers=sender,
                                              json={"at": "2031-05-01T09:00:00"})
            assert scheduled.json()["campaign"]["status"] == "scheduled", scheduled.text
            refused = await web.client.patch(url, headers=writer, json={"from_name": "Sneaky"})
            assert refused.status_code == 403, refused.text
            assert "campaigns:send" in refused.json()["detail"]
            assert 'scope="campaigns:send"' in refused.headers["www-authenticate"]
            shown = (await web.client.get(url, headers=writer)).json()
            assert shown["from_name"] == "Draft"
            allowed = await web.client.patch(url, headers=sender, json={"from_name": "Sent"})
            assert allowed.status_code == 200, allowed.text
            assert (allowed.json()["status"], allowed.json()["from_name"]) == (
                "scheduled", "Sent")

    asyncio.run(scenario())


def test_control_characters_no_message_can_carry_are_refused(tmp_path: Path) -> None:
    """The message builder refuses every control character but TAB in a header value; the API
    takes the same rule from it, so it stores no From name or subject that no message could
    carry."""

    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=1, excluded_each=0)
            h = bearer(await web.key("campaigns:*"))
            for field in ("name", "from_name", "subject", "postal_address"):
                for bad in ("x\x01y", "bell\x07", "del\x7f"):
                    made = await web.client.post(API, headers=h, json=await _draft_body(
                        web, **{field: bad}))
                    assert made.status_code == 422, (field, bad, made.text)
                    assert _fields(made) == [f"body.{field}"]
                    patched = await web.client.patch(f"{API}/{seeded.campaign.id}", headers=h,
                                                     json={field: bad})
                    assert patched.status_code == 422 and _fields(patched) == [f"body.{field}"]
            tabbed = await web.client.post(API, headers=h, json=await _draft_body(
                web, "tabbed", from_name="A\tNews", subject="Hi\tthere"))
            assert tabbed.status_code == 201, tabbed.text

    asyncio.run(scenario())
