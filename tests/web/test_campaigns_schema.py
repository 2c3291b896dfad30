"""schemathesis against the campaign routes of a live app whose store holds an audience, a
template and DKIM keys: the operations on one campaign get, for most generated cases, the id of
a fresh draft instead of a random number (which would only ever find 404s), so generated bodies
reach the use cases: PATCH, start with odd times, test sends, pause/resume/cancel from draft.
Fails on any 5xx or a response that does not match the schema. The e2e test
(tests/e2e/test_http_api.py) runs every resource against a real instance with no campaign."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.marketing.campaign_fixtures import BASE_URL, POSTAL, seed
from tests.web.conftest import live_web

EXAMPLES = 12  # per operation and generation mode: modest, the suite's time is shared


def _run(base: str, key: str, draft: dict[str, Any]) -> int:
    """Blocking (schemathesis calls with requests; the server runs on the test's loop)."""
    import requests
    import schemathesis
    from schemathesis.checks import not_a_server_error

    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    names = itertools.count()
    calls = 0

    def fresh_draft() -> int:
        made = requests.post(f"{base}/api/v1/campaigns", headers=headers, timeout=30,
                             json={**draft, "name": f"generated {next(names)}"})
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    operations = [r.ok() for r in schema.get_all_operations()
                  if r.ok().path.startswith("/api/v1/campaigns")]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                if case.path_parameters and "campaign_id" in case.path_parameters \
                        and calls % 4 != 0:
                    case.path_parameters["campaign_id"] = fresh_draft()
                response = case.call(base_url=base, headers=headers, timeout=30)
                assert response.status_code < 500, (case.method, case.formatted_path,
                                                     response.status_code, response.text)
                case.validate_response(response, checks=[not_a_server_error])

            run()
    return calls


def test_schemathesis_on_live_campaigns(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis", reason="schemathesis is not installed")

    async def scenario() -> None:
        async with live_web(tmp_path, public_url=BASE_URL, postal_address=POSTAL,
                            max_request_size=1 << 20) as web:
            seeded = await seed(web.store, confirmed=2, excluded_each=0)
            key = await web.key("*")
            draft = {"template_id": seeded.campaign.template_id,
                     "list_ids": list(seeded.campaign.list_ids), "from_address": "news@a.test"}
            calls = await asyncio.to_thread(_run, web.base, key, draft)
            assert calls >= 10 * 2 * 5

    asyncio.run(scenario())
