"""A storage failure during a campaign run, on SQLite and PostgreSQL, at each write of a batch:
for a campaign with a rate, each of the three steps (marketing.dispatch: 1 the send rows, 2 the
accepts, 3 the settle); for one without, the send rows and the accepts of its one transaction.
The database itself refuses the write (a real trigger raising, created and dropped by the test,
as a full disk or a lost connection would), so the run fails with StorageError. The campaign is
not paused (the runner retries at its next poll), nothing is queued twice, and the poll after
the trouble ends sends the campaign to every contact exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from mailprime.domain.campaigns import CampaignStatus
from mailprime.marketing.campaigns import CampaignRunner
from tests.marketing.campaign_fixtures import seed
from tests.marketing.test_dispatch import dispatcher, queue_by_address, started
from tests.storage.conftest import Backend, backend, pg_databases, pg_session_url  # noqa: F401

# The write that fails: (table, event) of the trigger.
STEPS = {"rows": ("campaign_sends", "INSERT"), "accept": ("queue_messages", "INSERT"),
         "settle": ("campaign_sends", "UPDATE")}
CONTACTS = 5
RATE = 60_000  # a minute: a second's worth (1,000) takes the whole batch at once, no waiting
# (step, rate): the three steps with a rate; without one, a batch is one transaction.
CASES = [*((step, RATE) for step in STEPS), ("rows", 0), ("accept", 0)]


def _sql(db: Backend, *statements: str) -> None:
    """DDL on a connection of its own, beside the store's."""
    engine = create_engine(db.url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _break(db: Backend, table: str, event: str) -> None:
    if db.name == "sqlite":
        _sql(db, f"CREATE TRIGGER trouble BEFORE {event} ON {table} "
                 "BEGIN SELECT RAISE(ABORT, 'database trouble'); END")
    else:
        _sql(db,
             "CREATE FUNCTION trouble() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "RAISE EXCEPTION 'database trouble' USING ERRCODE = '53100'; END $$",
             f"CREATE TRIGGER trouble BEFORE {event} ON {table} "
             "FOR EACH ROW EXECUTE FUNCTION trouble()")


def _mend(db: Backend, table: str) -> None:
    if db.name == "sqlite":
        _sql(db, "DROP TRIGGER trouble")
    else:
        _sql(db, f"DROP TRIGGER trouble ON {table}", "DROP FUNCTION trouble()")


@pytest.mark.parametrize(("step", "rate"), CASES, ids=[f"{s}-rate{r}" for s, r in CASES])
def test_a_failed_write_is_retried_at_the_next_poll_and_everyone_gets_one_message(
        backend: Backend, step: str, rate: int) -> None:  # noqa: F811
    async def main() -> None:
        table, event = STEPS[step]
        async with backend.open() as store:
            seeded = await seed(store, confirmed=CONTACTS, track=False, rate=rate)
            await started(store, seeded)
            cid = seeded.campaign.id
            runner = CampaignRunner(store, lambda: dispatcher(store), clock=backend.clock)
            _break(backend, table, event)
            try:
                await runner.tick()
                await runner.wait_idle()
                campaign = await store.get_campaign(cid)
                assert campaign is not None
                assert (campaign.status, campaign.pause_reason) == (CampaignStatus.SENDING, None)
                counters = await store.campaign_counters(cid)
                queued = await queue_by_address(store)
                if step == "rows" or not rate:  # nothing written (one transaction: all or none)
                    assert (counters.pending, counters.queued, len(queued)) == (0, 0, 0)
                elif step == "accept":  # rows written, no message
                    assert (counters.pending, counters.queued, len(queued)) == (CONTACTS, 0, 0)
                else:  # the messages are queued, their rows still pending
                    assert (counters.pending, counters.queued) == (CONTACTS, 0)
                    assert set(queued) == set(seeded.confirmed)
                    assert set(queued.values()) == {1}
            finally:
                _mend(backend, table)
            await runner.tick()
            await runner.wait_idle()
            campaign = await store.get_campaign(cid)
            assert campaign is not None and campaign.status is CampaignStatus.SENT
            got = await queue_by_address(store)
            assert set(got) == set(seeded.confirmed) and set(got.values()) == {1}
            counters = await store.campaign_counters(cid)
            assert (counters.queued, counters.pending, counters.failed) == (CONTACTS, 0, 0)

    asyncio.run(main())
