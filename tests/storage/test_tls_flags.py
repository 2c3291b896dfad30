"""The RFC 8689 flags of a queued message (REQUIRETLS, "TLS-Required: No") written at accept and
read back by every queue read — claim, leased accept, get_message, list_queue — on SQLite and on
PostgreSQL (see conftest.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.ids import new_queue_id
from mailprime.domain.mail import Acceptance, EnvelopeRecipient

if TYPE_CHECKING:
    from tests.storage.conftest import Backend

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.mark.parametrize(("require_tls", "tls_optional"), [(False, False), (True, False),
                                                           (False, True)])
async def test_flags_round_trip(backend: Backend, require_tls: bool, tls_optional: bool) -> None:
    async with backend.open() as store:
        claimed_id, leased_id = new_queue_id(), new_queue_id()
        for qid, lease in ((claimed_id, None), (leased_id, "node:1")):
            result = await store.accept(Acceptance(
                queue_id=qid, content=MSG, sender="s@example.org",
                remote=(EnvelopeRecipient("r@one.example"),), require_tls=require_tls,
                tls_optional=tls_optional), lease_to=lease, lease_seconds=60)
            if lease is not None:  # the jobs handed out at accept carry them too
                assert [(j.message.require_tls, j.message.tls_optional)
                        for j in result.jobs] == [(require_tls, tls_optional)]
        msg = await store.get_message(claimed_id)
        assert msg is not None
        assert (msg.require_tls, msg.tls_optional) == (require_tls, tls_optional)
        listed = {m.id: (m.require_tls, m.tls_optional) for m, _ in await store.list_queue(10)}
        assert listed == {claimed_id: (require_tls, tls_optional),
                          leased_id: (require_tls, tls_optional)}
        later = backend.clock.now() + timedelta(seconds=61)  # the lease has run out
        jobs = await store.claim_due(later, 10, "worker", 60)
        assert {j.message.id: (j.message.require_tls, j.message.tls_optional) for j in jobs} == {
            claimed_id: (require_tls, tls_optional), leased_id: (require_tls, tls_optional)}
