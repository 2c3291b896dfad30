"""/api/v1/segments over a real socket: save (refused with the column when the expression is
wrong), list, read, count, delete."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.web.conftest import live_web

PROBLEM = "application/problem+json"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_segment_crud_count_and_expression_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("segments:*", "contacts:write"))
            for i, plan in enumerate(["pro", "pro", "free", "pro"]):
                await web.client.post("/api/v1/contacts", headers=h, json={
                    "email": f"u{i}@example.com", "attributes": {"plan": plan, "age": 20 + i}})
            made = await web.client.post("/api/v1/segments", headers=h, json={
                "name": "pros", "expression": 'attributes.plan = "pro" and attributes.age >= 21'})
            assert made.status_code == 201, made.text
            seg = made.json()
            count = await web.client.get(f"/api/v1/segments/{seg['id']}/count", headers=h)
            assert count.status_code == 200 and count.json() == {"id": seg["id"], "count": 2}
            wrong = await web.client.post("/api/v1/segments", headers=h, json={
                "name": "bad", "expression": 'attributes.plan = "pro" and frobnicate'})
            assert wrong.status_code == 422 and wrong.headers["content-type"] == PROBLEM
            problem = wrong.json()
            assert problem["column"] == 29
            assert problem["errors"][0]["field"] == "body.expression"
            assert "column 29" in problem["errors"][0]["message"]
            unclosed = await web.client.post("/api/v1/segments", headers=h, json={
                "name": "bad", "expression": "(email contains 'x'"})
            assert unclosed.status_code == 422 and unclosed.json()["column"] == 20
            dup = await web.client.post("/api/v1/segments", headers=h, json={
                "name": "pros", "expression": "email exists"})
            assert dup.status_code == 409
            listed = (await web.client.get("/api/v1/segments", headers=h)).json()
            assert [s["name"] for s in listed] == ["pros"]
            got = await web.client.get(f"/api/v1/segments/{seg['id']}", headers=h)
            assert got.json()["expression"].startswith("attributes.plan")
            assert (await web.client.get("/api/v1/segments/999", headers=h)).status_code == 404
            assert (await web.client.get("/api/v1/segments/999/count",
                                         headers=h)).status_code == 404
            assert (await web.client.delete(f"/api/v1/segments/{seg['id']}",
                                            headers=h)).status_code == 204
            assert (await web.client.delete(f"/api/v1/segments/{seg['id']}",
                                            headers=h)).status_code == 404
            reader = bearer(await web.key("segments:read", name="reader"))
            assert (await web.client.post("/api/v1/segments", headers=reader, json={
                "name": "x", "expression": "email exists"})).status_code == 403

    asyncio.run(scenario())


def test_segment_patch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("segments:*", "contacts:write"))
            for i, plan in enumerate(["pro", "free", "free"]):
                await web.client.post("/api/v1/contacts", headers=h, json={
                    "email": f"u{i}@example.com", "attributes": {"plan": plan}})
            seg = (await web.client.post("/api/v1/segments", headers=h, json={
                "name": "pros", "expression": 'attributes.plan = "pro"'})).json()
            await web.client.post("/api/v1/segments", headers=h,
                                  json={"name": "taken", "expression": "email exists"})
            url = f"/api/v1/segments/{seg['id']}"
            changed = await web.client.patch(url, headers=h, json={
                "name": "free ones", "expression": 'attributes.plan = "free"'})
            assert changed.status_code == 200, changed.text
            assert changed.json()["name"] == "free ones"
            count = (await web.client.get(f"{url}/count", headers=h)).json()
            assert count["count"] == 2  # the new expression is the one counted
            wrong = await web.client.patch(url, headers=h, json={
                "expression": 'attributes.plan = "pro" and frobnicate'})
            assert wrong.status_code == 422 and wrong.json()["column"] == 29
            assert wrong.json()["errors"][0]["field"] == "body.expression"
            still = (await web.client.get(url, headers=h)).json()
            assert still["expression"] == 'attributes.plan = "free"'  # nothing stored
            assert (await web.client.patch(url, headers=h,
                                           json={"name": "taken"})).status_code == 409
            assert (await web.client.patch(url, headers=h,
                                           json={"name": " "})).status_code == 422
            assert (await web.client.patch("/api/v1/segments/999", headers=h,
                                           json={"name": "x"})).status_code == 404
            reader = bearer(await web.key("segments:read", name="reader"))
            assert (await web.client.patch(url, headers=reader,
                                           json={"name": "x"})).status_code == 403

    asyncio.run(scenario())
