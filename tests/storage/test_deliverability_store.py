"""Contract tests of the deliverability ports (SuppressionStore, SendingIpStore, MtaStsStore) on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from mailprime.domain.deliverability import (
    GLOBAL_SCOPE,
    MtaStsPolicyRecord,
    Suppression,
    SuppressionReason,
    TlsResultKey,
)
from mailprime.domain.ids import QueueId
from mailprime.storage.sql import deliverability
from mailprime.storage.sql.urls import parse_database_url
from tests.storage.conftest import Backend

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def entry(address: str, scope: str = GLOBAL_SCOPE, *, reason: SuppressionReason =
          SuppressionReason.HARD_BOUNCE, at: datetime = T0, detail: str = "550 5.1.1 unknown",
          queue_id: str | None = "0ZC1F4XKSNT6B7D8G9") -> Suppression:
    return Suppression(address=address, scope=scope, reason=reason, created_at=at, detail=detail,
                       queue_id=QueueId(queue_id) if queue_id else None)


async def test_suppress_find_and_first_evidence_wins(backend: Backend) -> None:
    async with backend.open() as store:
        assert await store.suppress(entry("Bob@Example.COM"))
        found = await store.find_suppression("bob@example.com", "a.test")
        assert found == entry("bob@example.com")  # lower-cased, every field kept
        # Case and angle brackets do not matter to the look-up (normalize_address).
        assert await store.find_suppression("<BOB@example.com>") == found
        # A second suppression of the same address and scope keeps the first evidence.
        assert not await store.suppress(entry("bob@example.com", reason=SuppressionReason.COMPLAINT,
                                              at=T0 + timedelta(days=1), detail="abuse"))
        again = await store.find_suppression("bob@example.com")
        assert again is not None and again.reason is SuppressionReason.HARD_BOUNCE
        assert await store.find_suppression("carol@example.com", "a.test") is None


async def test_domain_scope_applies_only_to_that_sending_domain(backend: Backend) -> None:
    async with backend.open() as store:
        assert await store.suppress(entry("bob@example.com", "A.Test", queue_id=None))
        scoped = await store.find_suppression("bob@example.com", "a.test")
        assert scoped is not None and (scoped.scope, scoped.queue_id) == ("a.test", None)
        assert await store.find_suppression("bob@example.com", "b.test") is None
        assert await store.find_suppression("bob@example.com") is None  # "" is the global scope
        # A global entry is preferred over a scoped one: it is the stronger statement.
        assert await store.suppress(entry("bob@example.com", reason=SuppressionReason.MANUAL,
                                          at=T0 + timedelta(hours=1)))
        both = await store.find_suppression("bob@example.com", "a.test")
        assert both is not None and (both.scope, both.reason) == ("", SuppressionReason.MANUAL)


async def test_unsuppress_one_scope_or_all(backend: Backend) -> None:
    async with backend.open() as store:
        for scope in ("", "a.test", "b.test"):
            await store.suppress(entry("bob@example.com", scope))
        assert await store.unsuppress("BOB@example.com", "A.TEST") == 1
        assert await store.find_suppression("bob@example.com", "a.test") is not None  # global left
        assert await store.unsuppress("bob@example.com") == 2
        assert await store.find_suppression("bob@example.com", "b.test") is None
        assert await store.unsuppress("bob@example.com") == 0


async def test_list_newest_first_by_scope_with_limit(backend: Backend) -> None:
    async with backend.open() as store:
        for i in range(5):
            await store.suppress(entry(f"u{i}@example.com", "a.test" if i % 2 else "",
                                       at=T0 + timedelta(minutes=i)))
        everyone = await store.list_suppressions()
        assert [s.address for s in everyone] == [f"u{i}@example.com" for i in (4, 3, 2, 1, 0)]
        assert [s.address for s in await store.list_suppressions("A.test")] == [
            "u3@example.com", "u1@example.com"]
        assert [s.address for s in await store.list_suppressions(GLOBAL_SCOPE, limit=2)] == [
            "u4@example.com", "u2@example.com"]


async def test_long_detail_is_cut_not_refused(backend: Backend) -> None:
    async with backend.open() as store:
        await store.suppress(entry("bob@example.com", detail="x" * 5000))
        found = await store.find_suppression("bob@example.com")
        assert found is not None and found.detail == "x" * 2000


async def test_soft_bounces_count_within_the_window(backend: Backend) -> None:
    async with backend.open() as store:
        day = timedelta(days=1)
        counts = [await store.record_soft_bounce("Bob@example.com", "", T0 + i * day, T0 + i * day - 7 * day)
                  for i in range(3)]
        assert counts == [1, 2, 3]
        # Another scope and another address count apart.
        assert await store.record_soft_bounce("bob@example.com", "a.test", T0, T0 - 7 * day) == 1
        assert await store.record_soft_bounce("carol@example.com", "", T0, T0 - 7 * day) == 1
        # Eight days on, with a seven-day window, the first bounce is forgotten (the window
        # starts at T0 + 1 day, inclusive).
        later = T0 + 8 * day
        assert await store.record_soft_bounce("bob@example.com", "", later, later - 7 * day) == 3
        much_later = T0 + 30 * day
        assert await store.record_soft_bounce("bob@example.com", "", much_later,
                                              much_later - 7 * day) == 1


async def test_concurrent_soft_bounces_are_all_counted(backend: Backend) -> None:
    async with backend.open() as store:
        results = await asyncio.gather(*(
            store.record_soft_bounce("bob@example.com", "", T0 + timedelta(seconds=i),
                                     T0 - timedelta(days=7)) for i in range(10)))
        assert sorted(results) == list(range(1, 11))


async def test_concurrent_soft_bounces_from_two_stores_are_all_counted(backend: Backend) -> None:
    """Two processes (two stores, two writers) soft-bouncing one address at once."""
    async with backend.open() as one, backend.open() as two:
        results = await asyncio.gather(*(
            (one if i % 2 else two).record_soft_bounce(
                "bob@example.com", "", T0 + timedelta(seconds=i), T0 - timedelta(days=7))
            for i in range(12)))
        assert sorted(results) == list(range(1, 13))


async def test_soft_bounce_waits_for_a_concurrent_one_of_the_same_address(backend: Backend) -> None:
    """The PostgreSQL race, made deterministic: one transaction has counted a soft bounce and
    not committed yet; a second one for the same address must wait for it and count both
    (under READ COMMITTED without the per-address lock it counted only its own). On SQLite the
    second writer waits for the database lock: the same contract."""
    async with backend.open():
        pass  # creates the schema
    engine = create_engine(parse_database_url(backend.url).url, poolclass=NullPool)
    window = T0 - timedelta(days=7)
    second: list[int] = []
    try:
        first = engine.connect()
        try:
            tx = first.begin()
            assert deliverability.record_soft_bounce(first, "Bob@example.com", "", T0, window) == 1

            def count_second() -> None:
                with engine.begin() as conn:
                    second.append(deliverability.record_soft_bounce(
                        conn, "bob@example.com", "", T0 + timedelta(seconds=1), window))

            worker = threading.Thread(target=count_second)
            worker.start()
            if backend.name == "postgresql":
                # Bounded: until the second one waits on the lock (or, without it, finished).
                with engine.connect() as probe:
                    for _ in range(2000):
                        waiting = probe.execute(text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND NOT granted")).scalar_one()
                        if waiting or not worker.is_alive():
                            break
                        worker.join(0.005)
                assert waiting == 1 and worker.is_alive(), "the second count did not wait"
            tx.commit()
        finally:
            first.close()
        worker.join(10)
        assert not worker.is_alive()
    finally:
        engine.dispose()
    assert second == [2]


async def test_purge_forgets_old_soft_bounces_of_every_address(backend: Backend) -> None:
    async with backend.open() as store:
        day = timedelta(days=1)
        wide = T0 - 365 * day  # a window that would still count everything
        assert await store.record_soft_bounce("bob@example.com", "", T0, wide) == 1
        assert await store.record_soft_bounce("carol@example.com", "a.test", T0 + day, wide) == 1
        assert await store.record_soft_bounce("dave@example.com", "", T0 + 3 * day, wide) == 1
        assert await store.purge_soft_bounces(T0 + 2 * day) == 2  # bob's and carol's
        assert await store.purge_soft_bounces(T0 + 2 * day) == 0
        assert await store.record_soft_bounce("bob@example.com", "", T0 + 4 * day, wide) == 1
        assert await store.record_soft_bounce("carol@example.com", "a.test", T0 + 4 * day, wide) == 1
        assert await store.record_soft_bounce("dave@example.com", "", T0 + 4 * day, wide) == 2


async def test_ip_usage_adds_up_per_day(backend: Backend) -> None:
    async with backend.open() as store:
        today, tomorrow = date(2030, 1, 2), date(2030, 1, 3)
        assert await store.ip_usage(today) == {}
        await store.add_ip_usage(today, {"192.0.2.1": 5, "2001:db8::1": 1})
        await store.add_ip_usage(today, {"192.0.2.1": 7})
        await asyncio.gather(*(store.add_ip_usage(tomorrow, {"192.0.2.1": 1}) for _ in range(8)))
        assert await store.ip_usage(today) == {"192.0.2.1": 12, "2001:db8::1": 1}
        assert await store.ip_usage(tomorrow) == {"192.0.2.1": 8}


async def test_mta_sts_policy_is_saved_and_replaced(backend: Backend) -> None:
    async with backend.open() as store:
        assert await store.get_mta_sts_policy("example.com") is None
        first = MtaStsPolicyRecord("Example.com", "20300101", "version: STSv1\nmode: testing\n",
                                   T0, T0 + timedelta(days=7))
        await store.save_mta_sts_policy(first)
        got = await store.get_mta_sts_policy("EXAMPLE.COM")
        assert got is not None and got.domain == "example.com"
        assert (got.policy_id, got.policy_text, got.fetched_at, got.expires_at) == (
            first.policy_id, first.policy_text, T0, T0 + timedelta(days=7))
        second = MtaStsPolicyRecord("example.com", "20300201", "version: STSv1\nmode: enforce\n",
                                    T0 + timedelta(days=1), T0 + timedelta(days=8))
        await store.save_mta_sts_policy(second)
        assert await store.get_mta_sts_policy("example.com") == second


async def test_tls_results_add_up_per_key_and_day(backend: Backend) -> None:
    async with backend.open() as store:
        day = date(2030, 1, 2)
        ok = TlsResultKey("example.com", "sts", "", "mx1.example.com")
        bad = TlsResultKey("example.com", "sts", "certificate-expired", "mx2.example.com")
        other = TlsResultKey("example.net", "no-policy-found", "")
        await store.add_tls_results(day, {ok: 3, bad: 1})
        await store.add_tls_results(day, {ok: 2, other: 4})
        await asyncio.gather(*(store.add_tls_results(day, {bad: 1}) for _ in range(4)))
        assert await store.tls_results(day) == [(ok, 5), (bad, 5), (other, 4)]
        assert await store.tls_results(date(2030, 1, 3)) == []
