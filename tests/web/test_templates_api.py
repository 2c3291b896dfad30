"""/api/v1/templates over a real socket: store (refused with every problem's part and line),
read, replace, delete, preview with sample data or a stored contact, and the campaign check."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.web.conftest import live_web

PROBLEM = "application/problem+json"
GOOD_HTML = ('<p>Hello {{ name }} from {{ attributes.city | default("nowhere") }}</p>'
             '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</p>')


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_template_crud_and_compile_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("templates:*"))
            made = await web.client.post("/api/v1/templates", headers=h, json={
                "name": "welcome", "subject": "Hi {{ name }}", "html": GOOD_HTML})
            assert made.status_code == 201, made.text
            t = made.json()
            assert t["text"] is None
            broken = await web.client.post("/api/v1/templates", headers=h, json={
                "name": "broken", "subject": "Hi {{ name",
                "html": "<p>ok</p>\n<p>{% if x %}</p>"})
            assert broken.status_code == 422 and broken.headers["content-type"] == PROBLEM
            fields = {(e["field"], e["message"].split(":")[0]) for e in broken.json()["errors"]}
            assert ("body.subject", "line 1") in fields and ("body.html", "line 2") in fields
            injected = await web.client.post("/api/v1/templates", headers=h, json={
                "name": "x", "subject": "a\r\nBcc: v@example.com", "html": "<p>x</p>"})
            assert injected.status_code == 422
            assert injected.json()["errors"][0]["field"] == "body.subject"
            dup = await web.client.post("/api/v1/templates", headers=h, json={
                "name": "welcome", "subject": "x", "html": "<p>x</p>"})
            assert dup.status_code == 409
            listed = (await web.client.get("/api/v1/templates", headers=h)).json()
            assert [x["name"] for x in listed] == ["welcome"]
            replaced = await web.client.put(f"/api/v1/templates/{t['id']}", headers=h, json={
                "name": "welcome2", "subject": "Hello", "html": GOOD_HTML, "text": "Hi"})
            assert replaced.status_code == 200 and replaced.json()["text"] == "Hi"
            got = (await web.client.get(f"/api/v1/templates/{t['id']}", headers=h)).json()
            assert got["name"] == "welcome2"
            assert (await web.client.put("/api/v1/templates/999", headers=h, json={
                "name": "n", "subject": "s", "html": "<p>h</p>"})).status_code == 404
            assert (await web.client.delete(f"/api/v1/templates/{t['id']}",
                                            headers=h)).status_code == 204
            assert (await web.client.get(f"/api/v1/templates/{t['id']}",
                                         headers=h)).status_code == 404
            reader = bearer(await web.key("templates:read", name="reader"))
            assert (await web.client.post("/api/v1/templates", headers=reader, json={
                "name": "n", "subject": "s", "html": "<p>h</p>"})).status_code == 403

    asyncio.run(scenario())


def test_preview_and_check(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path) as web:
            h = bearer(await web.key("templates:*", "contacts:write"))
            t = (await web.client.post("/api/v1/templates", headers=h, json={
                "name": "welcome", "subject": "Hi {{ name }}", "html": GOOD_HTML})).json()
            preview = await web.client.post(f"/api/v1/templates/{t['id']}/preview", headers=h,
                                            json={"contact": {"name": "<Ann>", "attributes": {
                                                "city": "Oslo"}}})
            assert preview.status_code == 200, preview.text
            p = preview.json()
            assert p["subject"] == "Hi <Ann>"
            assert "Hello &lt;Ann&gt; from Oslo" in p["html"] and "Oslo" in p["text"]
            await web.client.post("/api/v1/contacts", headers=h, json={
                "email": "bo@example.com", "name": "Bo", "attributes": {"city": "Rome"}})
            stored = (await web.client.post(f"/api/v1/templates/{t['id']}/preview", headers=h,
                                            json={"email": "bo@example.com"})).json()
            assert "Hello Bo from Rome" in stored["html"]
            nobody = await web.client.post(f"/api/v1/templates/{t['id']}/preview", headers=h,
                                           json={"email": "nobody@example.com"})
            assert nobody.status_code == 404
            # No postal address configured: the check says so, as data.
            checked = (await web.client.post(f"/api/v1/templates/{t['id']}/check", headers=h,
                                             json={})).json()
            assert checked["ok"] is False
            assert [c["code"] for c in checked["compliance"]] == ["postal-address-missing"]
            strict = (await web.client.post("/api/v1/templates", headers=h, json={
                "name": "strict", "subject": "Hi",
                "html": "<p>{{ attributes.plan }}</p>\n<p>{{ nonsense }}</p>"})).json()
            found = (await web.client.post(f"/api/v1/templates/{strict['id']}/check", headers=h,
                                           json={"contact": {"attributes": {}}})).json()
            lines = {(x["part"], x["line"], x["name"]) for x in found["problems"]}
            assert ("html", 1, "attributes.plan") in lines and ("html", 2, "nonsense") in lines
            failing = await web.client.post(f"/api/v1/templates/{strict['id']}/preview",
                                            headers=h, json={})
            assert failing.status_code == 422
            assert failing.json()["errors"][0]["field"] == "template.html"
            assert (await web.client.post("/api/v1/templates/999/check", headers=h,
                                          json={})).status_code == 404

    asyncio.run(scenario())
