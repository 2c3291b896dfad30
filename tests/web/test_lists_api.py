"""/api/v1/lists over a real socket: create, read, delete, members (add with status, pages,
remove as unsubscribe) and the consent ledger behind each change."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.web.conftest import live_web

PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_list_crud_and_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("lists:*"))
            made = await web.client.post("/api/v1/lists", headers=h, json={
                "name": "news", "description": "Monthly", "opt_in": "double"})
            assert made.status_code == 201, made.text
            lst = made.json()
            assert lst["opt_in"] == "double" and lst["members"]["confirmed"] == 0
            dup = await web.client.post("/api/v1/lists", headers=h, json={"name": "news"})
            assert dup.status_code == 409 and dup.headers["content-type"] == PROBLEM
            injected = await web.client.post("/api/v1/lists", headers=h,
                                             json={"name": "a\nb"})
            assert injected.status_code == 422
            assert injected.json()["errors"][0]["field"] == "body.name"
            bad_kind = await web.client.post("/api/v1/lists", headers=h,
                                             json={"name": "x", "opt_in": "triple"})
            assert bad_kind.status_code == 422
            listed = (await web.client.get("/api/v1/lists", headers=h)).json()
            assert [x["name"] for x in listed] == ["news"]
            got = await web.client.get(f"/api/v1/lists/{lst['id']}", headers=h)
            assert got.status_code == 200 and got.json()["description"] == "Monthly"
            assert (await web.client.get("/api/v1/lists/999", headers=h)).status_code == 404
            assert (await web.client.get("/api/v1/lists/0", headers=h)).status_code == 422
            assert (await web.client.delete(f"/api/v1/lists/{lst['id']}",
                                            headers=h)).status_code == 204
            assert (await web.client.delete(f"/api/v1/lists/{lst['id']}",
                                            headers=h)).status_code == 404
            reader = bearer(await web.key("lists:read", name="reader"))
            assert (await web.client.post("/api/v1/lists", headers=reader,
                                          json={"name": "z"})).status_code == 403

    asyncio.run(scenario())


def test_members_add_page_and_remove(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("lists:*"))
            double = (await web.client.post("/api/v1/lists", headers=h,
                                            json={"name": "double"})).json()
            single = (await web.client.post("/api/v1/lists", headers=h, json={
                "name": "single", "opt_in": "single"})).json()
            base = f"/api/v1/lists/{double['id']}/members"
            first = await web.client.post(base, headers=h, json={
                "email": "a@example.com", "name": "A", "wording_version": "form-3"})
            assert first.status_code == 201 and first.json()["status"] == "unconfirmed"
            vouched = await web.client.post(base, headers=h, json={
                "email": "b@example.com", "status": "confirmed"})
            assert vouched.status_code == 201 and vouched.json()["status"] == "confirmed"
            again = await web.client.post(base, headers=h, json={"email": "b@example.com"})
            assert again.status_code == 200 and again.json()["status"] == "confirmed"
            on_single = await web.client.post(f"/api/v1/lists/{single['id']}/members",
                                              headers=h, json={"email": "a@example.com"})
            assert on_single.json()["status"] == "confirmed"
            refused = await web.client.post(base, headers=h, json={
                "email": "c@example.com", "status": "unsubscribed"})
            assert refused.status_code == 422
            assert refused.json()["errors"][0]["field"] == "body.status"
            bad = await web.client.post(base, headers=h, json={"email": "nope"})
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.email"
            for i in range(5):
                await web.client.post(base, headers=h, json={"email": f"m{i}@example.com"})
            emails: list[str] = []
            after = None
            for _ in range(10):
                params: dict[str, object] = {"limit": 3}
                if after is not None:
                    params["after"] = after
                page = (await web.client.get(base, headers=h, params=params)).json()
                emails += [m["contact"]["email"] for m in page["items"]]
                after = page["next_after"]
                if after is None:
                    break
            assert len(emails) == 7 and len(set(emails)) == 7
            unconfirmed = (await web.client.get(base, headers=h,
                                                params={"status": "unconfirmed"})).json()
            assert "b@example.com" not in [m["contact"]["email"] for m in unconfirmed["items"]]
            removed = await web.client.delete(f"{base}/A@example.com", headers=h)
            assert removed.status_code == 204
            assert (await web.client.delete(f"{base}/zz@example.com",
                                            headers=h)).status_code == 404
            counts = (await web.client.get(f"/api/v1/lists/{double['id']}", headers=h)).json()
            assert counts["members"] == {"unconfirmed": 5, "confirmed": 1, "unsubscribed": 1}
            ledger = await web.store.consent_entries("a@example.com")
            on_double = [(e.action.value, e.source.value, e.wording_version)
                         for e in ledger if e.purpose == "double"]
            assert on_double == [("given", "api", "form-3"), ("withdrawn", "api", "")]
            assert all(e.ip == "127.0.0.1" for e in ledger)
            # Asked again after an unsubscribe: a new consent, unconfirmed again.
            back = await web.client.post(base, headers=h, json={"email": "a@example.com"})
            assert back.status_code == 201 and back.json()["status"] == "unconfirmed"
            # Back on a single opt-in list: consent given and confirmed anew.
            single_base = f"/api/v1/lists/{single['id']}/members"
            assert (await web.client.delete(f"{single_base}/a@example.com",
                                            headers=h)).status_code == 204
            rejoined = await web.client.post(single_base, headers=h,
                                             json={"email": "a@example.com"})
            assert rejoined.status_code == 201 and rejoined.json()["status"] == "confirmed"
            on_single = [e.action.value for e in await web.store.consent_entries("a@example.com")
                         if e.purpose == "single"]
            assert on_single == ["given", "confirmed", "withdrawn", "given", "confirmed"]

    asyncio.run(scenario())


def test_list_patch_and_the_opt_in_rule(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("lists:*"))
            lst = (await web.client.post("/api/v1/lists", headers=h, json={
                "name": "news", "description": "Monthly"})).json()
            await web.client.post("/api/v1/lists", headers=h, json={"name": "taken"})
            url = f"/api/v1/lists/{lst['id']}"
            renamed = await web.client.patch(url, headers=h, json={
                "name": " letters ", "description": "Weekly"})
            assert renamed.status_code == 200, renamed.text
            assert (renamed.json()["name"], renamed.json()["description"],
                    renamed.json()["opt_in"]) == ("letters", "Weekly", "double")
            kept = await web.client.patch(url, headers=h, json={"description": None})
            assert kept.json()["description"] == "Weekly"  # null: left as it is
            taken = await web.client.patch(url, headers=h, json={"name": "taken"})
            assert taken.status_code == 409 and taken.headers["content-type"] == PROBLEM
            injected = await web.client.patch(url, headers=h, json={"name": "a\r\nBcc: x"})
            assert injected.status_code == 422
            assert injected.json()["errors"][0]["field"] == "body.name"
            blank = await web.client.patch(url, headers=h, json={"name": "   "})
            assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "body.name"
            assert (await web.client.patch("/api/v1/lists/999", headers=h,
                                           json={"name": "x"})).status_code == 404
            # An unconfirmed member keeps the list double opt-in; stricter is always fine.
            await web.client.post(f"{url}/members", headers=h, json={"email": "a@example.com"})
            looser = await web.client.patch(url, headers=h, json={"opt_in": "single"})
            assert looser.status_code == 409, looser.text
            assert "1 unconfirmed member" in looser.json()["detail"]
            await web.client.delete(f"{url}/members/a@example.com", headers=h)
            single = await web.client.patch(url, headers=h, json={"opt_in": "single"})
            assert single.status_code == 200 and single.json()["opt_in"] == "single"
            assert single.json()["members"]["unsubscribed"] == 1
            double = await web.client.patch(url, headers=h, json={"opt_in": "double"})
            assert double.json()["opt_in"] == "double"
            reader = bearer(await web.key("lists:read", name="reader"))
            assert (await web.client.patch(url, headers=reader,
                                           json={"name": "z"})).status_code == 403

    asyncio.run(scenario())
