"""PUT and DELETE /api/v1/templates/{id} over a real socket while a campaign under way uses the
template: a campaign reads its template again at each run (after a pause, a restart), so a new
body would reach the rest of its audience unchecked. Scheduled, sending and paused: 409, a
problem naming the campaign, the template unchanged; a rename alone is fine; once the campaign
is cancelled the template is free again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.marketing.campaign_fixtures import BASE_URL, HTML, POSTAL, seed
from tests.web.conftest import live_web

PROBLEM = "application/problem+json"


def test_a_template_under_way_is_not_replaced_or_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL) as web:
            seeded = await seed(web.store, confirmed=2, excluded_each=0)
            h = {"Authorization": f"Bearer {await web.key('campaigns:*', 'templates:*')}"}
            campaign = f"/api/v1/campaigns/{seeded.campaign.id}"
            url = f"/api/v1/templates/{seeded.campaign.template_id}"
            before = (await web.client.get(url, headers=h)).json()
            changed = {"name": before["name"], "subject": before["subject"],
                       "html": HTML.replace("Our news", "Other news")}

            async def refused(status: str) -> None:
                shown = (await web.client.get(campaign, headers=h)).json()
                assert shown["status"] == status
                put = await web.client.put(url, headers=h, json=changed)
                assert put.status_code == 409, (status, put.text)
                assert put.headers["content-type"] == PROBLEM
                assert "'April news'" in put.json()["detail"]
                deleted = await web.client.delete(url, headers=h)
                assert deleted.status_code == 409 and "'April news'" in deleted.json()["detail"]
                kept = (await web.client.get(url, headers=h)).json()
                assert kept["html"] == before["html"]

            scheduled = await web.client.post(f"{campaign}/start", headers=h,
                                              json={"at": "2031-05-01T09:00:00"})
            assert scheduled.status_code == 200, scheduled.text
            await refused("scheduled")
            sending = await web.client.post(f"{campaign}/start", headers=h)
            assert sending.status_code == 200, sending.text
            await refused("sending")
            assert (await web.client.post(f"{campaign}/pause", headers=h)).status_code == 200
            await refused("paused")

            renamed = await web.client.put(url, headers=h, json={
                "name": "news2", "subject": before["subject"], "html": before["html"]})
            assert renamed.status_code == 200, renamed.text
            assert renamed.json()["html"] == before["html"]

            assert (await web.client.post(f"{campaign}/cancel", headers=h)).status_code == 200
            replaced = await web.client.put(url, headers=h, json=changed)
            assert replaced.status_code == 200, replaced.text
            assert "Other news" in replaced.json()["html"]
            assert (await web.client.delete(url, headers=h)).status_code == 204

    asyncio.run(scenario())
