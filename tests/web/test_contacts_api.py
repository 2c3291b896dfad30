"""/api/v1/contacts over a real socket: create, read, update, keyset pages and filters, GDPR
export and erasure, and every refusal as a problem naming its field."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailprime.domain.audience import ConsentEvidence, ConsentSource, MembershipStatus, OptIn
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.mail import EventKind
from tests.web.conftest import live_web

PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_create_read_update_and_conflict(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("contacts:*"))
            made = await web.client.post("/api/v1/contacts", headers=h, json={
                "email": "Ann@Example.COM", "name": "Ann", "attributes": {"plan": "pro",
                                                                          "n": {"a": [1, 2]}}})
            assert made.status_code == 201, made.text
            body = made.json()
            assert body["email"] == "Ann@example.com" and body["attributes"]["plan"] == "pro"
            again = await web.client.post("/api/v1/contacts", headers=h,
                                          json={"email": "ann@example.com"})
            assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
            got = await web.client.get("/api/v1/contacts/ANN@example.com", headers=h)
            assert got.status_code == 200 and got.json()["id"] == body["id"]
            assert got.json()["memberships"] == []
            patched = await web.client.patch("/api/v1/contacts/ann@example.com", headers=h, json={
                "name": "Ann B", "attributes": {"plan": None, "city": "Oslo"}})
            assert patched.status_code == 200, patched.text
            assert patched.json()["name"] == "Ann B"
            assert patched.json()["attributes"] == {"n": {"a": [1, 2]}, "city": "Oslo"}
            missing = await web.client.get("/api/v1/contacts/nobody@example.com", headers=h)
            assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
            missing_patch = await web.client.patch("/api/v1/contacts/nobody@example.com",
                                                   headers=h, json={"name": "x"})
            assert missing_patch.status_code == 404

    asyncio.run(scenario())


def test_validation_refusals_name_the_field(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, max_request_size=256 * 1024) as web:
            h = bearer(await web.key("contacts:*"))

            async def refused(body: object, field: str) -> str:
                got = await web.client.post("/api/v1/contacts", headers=h, json=body)
                assert got.status_code == 422, (body, got.text)
                assert got.headers["content-type"] == PROBLEM
                fields = [e["field"] for e in got.json()["errors"]]
                assert any(f.startswith(field) for f in fields), (field, got.json())
                return str(got.json()["errors"][0]["message"])

            await refused({"email": "not an address"}, "body.email")
            await refused({"email": "a@example.com", "name": "Ann\r\nBcc: x@y.z"}, "body.name")
            deep: object = 1
            for _ in range(10):
                deep = {"k": deep}
            assert "nest" in await refused({"email": "a@example.com", "attributes": deep},
                                           "body.attributes")
            big = {"blob": "x" * 70_000}
            assert "octets" in await refused({"email": "a@example.com", "attributes": big},
                                             "body.attributes")
            await refused({"email": "a@example.com", "attributes": {"": 1}}, "body.attributes")
            await refused({"email": "a@example.com", "attributes": [1]}, "body.attributes")
            bad_path = await web.client.get("/api/v1/contacts/no-at-sign", headers=h)
            assert bad_path.status_code == 422
            assert bad_path.json()["errors"][0]["field"] == "path.email"

    asyncio.run(scenario())


def test_keys_and_scopes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            reader = bearer(await web.key("contacts:read", name="reader"))
            assert (await web.client.get("/api/v1/contacts")).status_code == 401
            assert (await web.client.get("/api/v1/contacts", headers=reader)).status_code == 200
            refused = await web.client.post("/api/v1/contacts", headers=reader,
                                            json={"email": "a@example.com"})
            assert refused.status_code == 403 and "contacts:write" in refused.json()["detail"]
            other = bearer(await web.key("lists:*", name="lists"))
            assert (await web.client.get("/api/v1/contacts", headers=other)).status_code == 403

    asyncio.run(scenario())


def test_keyset_pages_and_filters(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("*"))
            for i in range(25):
                domain = "test.org" if i % 5 == 0 else "example.com"
                await web.client.post("/api/v1/contacts", headers=h,
                                      json={"email": f"user{i:02d}@{domain}"})
            seen: list[str] = []
            after = None
            pages = 0
            while True:
                params: dict[str, int] = {"limit": 10}
                if after is not None:
                    params["after"] = after
                page = (await web.client.get("/api/v1/contacts", headers=h, params=params)).json()
                pages += 1
                seen += [c["email"] for c in page["items"]]
                after = page["next_after"]
                if after is None:
                    break
                assert pages < 10
            assert pages == 3 and len(seen) == 25 and len(set(seen)) == 25
            filtered = (await web.client.get("/api/v1/contacts", headers=h,
                                             params={"email": "@TEST.org"})).json()
            assert [c["email"] for c in filtered["items"]] == [
                f"user{i:02d}@test.org" for i in range(0, 25, 5)]
            news = (await web.client.post("/api/v1/lists", headers=h,
                                          json={"name": "news", "opt_in": "single"})).json()
            for email in ("user01@example.com", "user05@test.org"):
                added = await web.client.post(f"/api/v1/lists/{news['id']}/members", headers=h,
                                              json={"email": email})
                assert added.status_code == 201, added.text
            members = (await web.client.get("/api/v1/contacts", headers=h,
                                            params={"list_id": news["id"]})).json()
            assert [c["email"] for c in members["items"]] == ["user01@example.com",
                                                               "user05@test.org"]
            both = (await web.client.get("/api/v1/contacts", headers=h, params={
                "list_id": news["id"], "email": "test.org"})).json()
            assert [c["email"] for c in both["items"]] == ["user05@test.org"]
            no_list = await web.client.get("/api/v1/contacts", headers=h,
                                           params={"list_id": 999})
            assert no_list.status_code == 404
            too_many = await web.client.get("/api/v1/contacts", headers=h,
                                            params={"limit": 5000})
            assert too_many.status_code == 422
            assert too_many.json()["errors"][0]["field"] == "query.limit"

    asyncio.run(scenario())


def test_gdpr_export_and_erase(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("contacts:*"))
            store = web.store
            await web.client.post("/api/v1/contacts", headers=h, json={
                "email": "eve@example.com", "name": "Eve", "attributes": {"city": "Rome"}})
            lst = await store.create_list("weekly", opt_in=OptIn.DOUBLE)
            contact = await store.get_contact("eve@example.com")
            assert contact is not None
            await store.set_membership(contact.id, lst.id, status=MembershipStatus.UNCONFIRMED,
                                       evidence=ConsentEvidence(ConsentSource.FORM, "v1",
                                                                "192.0.2.7"))
            await store.append(EventKind.OPENED, None, "eve@example.com", "", ())
            exported = await web.client.get("/api/v1/contacts/eve@example.com/export", headers=h)
            assert exported.status_code == 200, exported.text
            data = exported.json()
            assert data["contact"]["attributes"] == {"city": "Rome"}
            assert data["contact"]["memberships"][0]["list_name"] == "weekly"
            assert [(c["action"], c["ip"], c["wording_version"]) for c in data["consent"]] == [
                ("given", "192.0.2.7", "v1")]
            assert [e["kind"] for e in data["events"]] == ["opened"]
            no_confirm = await web.client.delete("/api/v1/contacts/eve@example.com", headers=h)
            assert no_confirm.status_code == 422
            assert no_confirm.json()["errors"][0]["field"] == "query.erase"
            erased = await web.client.delete("/api/v1/contacts/eve@example.com", headers=h,
                                             params={"erase": "true"})
            assert erased.status_code == 200, erased.text
            assert erased.json()["erased"] is True and erased.json()["memberships"] == 1
            assert await store.get_contact("eve@example.com") is None
            # A hashed suppression keeps the address from being mailed again.
            assert await store.find_suppression("eve@example.com") is not None
            after = (await web.client.get("/api/v1/contacts/eve@example.com/export",
                                          headers=h)).json()
            assert after["contact"] is None and all(c["ip"] == "" for c in after["consent"])
            assert (await web.client.delete("/api/v1/contacts/ghost@example.com", headers=h,
                                            params={"erase": "true"})).status_code == 404
            assert (await web.client.get("/api/v1/contacts/ghost@example.com/export",
                                         headers=h)).status_code == 404
            # Held only as a suppression: that is personal data too, and exportable.
            await store.suppress(Suppression("kim@example.com", "", SuppressionReason.MANUAL,
                                             web.clock.now(), "by hand"))
            kim = (await web.client.get("/api/v1/contacts/kim@example.com/export",
                                        headers=h)).json()
            assert kim["contact"] is None and kim["suppressions"][0]["reason"] == "manual"

    asyncio.run(scenario())
