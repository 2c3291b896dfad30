"""The HTTP listener of a real instance (`running_instance(http=True)`: runtime's wiring, the
link key from the data directory), and schemathesis run against its own OpenAPI schema."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trustme
from hypothesis import HealthCheck, Phase, given, settings

from mailprime.domain.api_keys import new_api_key
from mailprime.domain.mail import EventKind
from mailprime.marketing.tokens import MessageRecipient, OpenToken, TokenSigner, UnsubscribeToken
from mailprime.services.verp_key import read_secrets
from tests.support.instance import Instance, running_instance, simple_message, submit

pytestmark = pytest.mark.slow

USER = "postmaster@a.test"
ACCOUNTS = {USER: "secret-password-1"}


async def api_key(inst: Instance, *scopes: str) -> str:
    made = new_api_key()
    await inst.server.store.add_api_key("e2e", made.prefix, made.secret_hash, frozenset(scopes),
                                        datetime.now(UTC))
    return made.text


def test_the_instance_serves_the_api_tracking_and_unsubscribe(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                    accounts=ACCOUNTS, http=True, sandbox=True) as inst:
            assert set(inst.server.ports) >= {"mx", "submission", "http"}
            signer = TokenSigner(read_secrets(tmp_path / "links.key"))  # made at start
            sent = await submit(inst, USER, USER, ["reader@b.test"],
                                simple_message(USER, "reader@b.test", "news"))
            (rcpt,) = await inst.recipients(sent.queue_id)
            subject = MessageRecipient(rcpt.queue_id, rcpt.id)
            key = await api_key(inst, "suppressions:read")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{inst.port('http')}",
                                         timeout=10) as client:
                assert (await client.get("/healthz")).json()["status"] == "ok"
                pixel = await client.get(f"/t/o/{signer.sign(OpenToken(subject))}.gif")
                assert pixel.status_code == 200
                done = await client.post(
                    f"/u/{signer.sign(UnsubscribeToken(subject, 'reader@b.test', 'a.test'))}",
                    content=b"List-Unsubscribe=One-Click",
                    headers={"content-type": "application/x-www-form-urlencoded"})
                assert done.status_code == 200
                listed = await client.get("/api/v1/suppressions",
                                          headers={"Authorization": f"Bearer {key}"})
                assert [i["email"] for i in listed.json()["items"]] == ["reader@b.test"]
            kinds = {e.kind for e in await inst.events(sent.queue_id)}
            assert {EventKind.OPENED, EventKind.UNSUBSCRIBED} <= kinds

    asyncio.run(scenario())


# The schema's operations, one test per resource so that each stays within the time a test may
# take; an operation under none of these prefixes fails every run (a new resource must be added).
RESOURCES = ("suppressions", "contacts", "lists", "segments", "templates", "campaigns", "messages",
             "webhooks")
EXAMPLES = 20  # per operation and generation mode


def _schemathesis_run(base: str, key: str, resource: str) -> int:
    """Blocking (schemathesis calls with requests): every operation of the live schema under
    /api/v1/<resource>, positive and negative examples, bounded; fails on any 5xx. Returns the
    number of calls made."""
    # Imported here: the test is skipped, not the module, when schemathesis is missing.
    import schemathesis
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    uncovered = [o.path for o in operations
                 if not any(o.path.startswith(f"/api/v1/{r}") for r in RESOURCES)]
    assert not uncovered, f"add these to RESOURCES: {uncovered}"
    for operation in operations:
        if not operation.path.startswith(f"/api/v1/{resource}"):
            continue
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base, headers={"Authorization": f"Bearer {key}"},
                                     timeout=30)  # generous: a loaded CI machine
                assert response.status_code < 500, (case.method, case.formatted_path,
                                                     response.status_code, response.text)
                case.validate_response(response, checks=[not_a_server_error])

            run()
    return calls


@pytest.mark.parametrize("resource", RESOURCES)
def test_schemathesis_finds_no_server_error(tmp_path: Path, ca: trustme.CA, resource: str) -> None:
    pytest.importorskip("schemathesis", reason="schemathesis is not installed")

    async def scenario() -> None:
        async with running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                    accounts=ACCOUNTS, http=True) as inst:
            key = await api_key(inst, "*")
            calls = await asyncio.to_thread(_schemathesis_run,
                                            f"http://127.0.0.1:{inst.port('http')}", key, resource)
            assert calls >= 2 * 10  # at least one operation, two modes, a real number of examples

    asyncio.run(scenario())
