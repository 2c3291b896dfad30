"""The relay fast path end to end: a message A accepts for a remote domain is leased to A's own
delivery worker in the accept transaction and delivered to B without any claim of the queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from mailprime.domain.mail import EventKind, RecipientStatus
from tests.support.dns_server import DnsTestServer
from tests.support.instance import running_instance, simple_message, submit

pytestmark = pytest.mark.slow  # starts servers

ALICE = "alice@a.test"
BOB = "bob@b.test"


def test_relayed_message_is_delivered_without_a_claim(tmp_path: Path, ca: trustme.CA,
                                                       dns_server: DnsTestServer) -> None:
    dns_server.zone.add_mx("b.test", 10, "mx.b.test")
    dns_server.zone.add_a("mx.b.test", "127.0.0.1")

    async def scenario() -> None:
        async with (
            running_instance(tmp_path / "b", ca, domain="b.test", hostname="mx.b.test",
                             accounts={BOB: "bob-secret"}) as b,
            running_instance(tmp_path / "a", ca, domain="a.test", hostname="mail.a.test",
                             accounts={ALICE: "alice-secret"}, nameservers=[dns_server.address],
                             mx_port=b.port("mx")) as a,
        ):
            for n in range(3):
                result = await submit(a, ALICE, ALICE, [BOB], simple_message(ALICE, BOB, f"m{n}"))
                assert result.code == 250
                events = await a.wait_events(result.queue_id, (EventKind.DELIVERED,))
                assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.DELIVERED]
                (rcpt,) = await a.recipients(result.queue_id)
                assert (rcpt.status, rcpt.attempts) == (RecipientStatus.DELIVERED, 1)
            await b.wait_mailbox(BOB, 3)
            worker = a.server.worker
            assert (worker.direct_jobs, worker.claimed_jobs) == (3, 0)
            assert list(await a.server.store.lease_owners()) == []

    asyncio.run(scenario())
