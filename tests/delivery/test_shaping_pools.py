"""IP pools, warm-up schedules and counts (on a real SQLite store, shared by two counters as by
two processes), and the [shaping] settings: tables of tables, their errors, and the wiring."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mailprime.adapters.shaping import build_shaping
from mailprime.config import load_settings
from mailprime.delivery.ip_pools import IpPool, PoolSelector, WarmupCounter, WarmupSchedule
from mailprime.delivery.shaping import GroupLimits
from mailprime.domain.errors import ConfigError
from mailprime.domain.mail import Priority
from mailprime.storage.sql import open_store


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


POOLS = [
    IpPool("tx", ("127.0.0.2",), sender_domains=frozenset({"shop.test"})),
    IpPool("bulk", ("127.0.0.3", "127.0.0.4"), priorities=frozenset({Priority.BULK})),
    IpPool("main", ("127.0.0.5",)),
]


@pytest.mark.parametrize(("sender", "priority", "pool"), [
    ("orders@shop.test", Priority.BULK, "tx"),  # the sender's domain wins over the class
    ("news@mail.shop.test", Priority.NORMAL, "tx"),  # subdomains of a listed domain too
    ("news@other.test", Priority.BULK, "bulk"),
    ("a@other.test", Priority.NORMAL, "main"),
    ("", Priority.TRANSACTIONAL, "main"),  # the null sender (DSNs): the default pool
])
def test_pool_by_sender_domain_then_class_then_default(sender: str, priority: Priority,
                                                      pool: str) -> None:
    chosen = PoolSelector(POOLS, "main").choose(sender, priority)
    assert chosen is not None and chosen.name == pool


def test_no_default_pool_means_no_binding() -> None:
    assert PoolSelector(POOLS[:1]).choose("a@other.test", Priority.NORMAL) is None


def test_warmup_schedules() -> None:
    listed = WarmupSchedule(date(2026, 3, 1), caps=(50, 100, 200))
    assert [listed.cap(date(2026, 3, d)) for d in (1, 2, 3, 4)] == [50, 100, 200, None]
    assert listed.cap(date(2026, 2, 28)) == 0  # not started yet
    factor = WarmupSchedule(date(2026, 3, 1), first=50, factor=2.0, days=3)
    assert [factor.cap(date(2026, 3, d)) for d in (1, 2, 3, 4)] == [50, 100, 200, None]


def test_warmup_counts_are_shared_through_the_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                                 inline_max=64 * 1024)
        clock = FakeClock(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
        schedules = {"127.0.0.2": WarmupSchedule(date(2026, 3, 1), caps=(3, 5))}
        ticks = Ticks()
        one = WarmupCounter(store, schedules, clock, flush_seconds=5, monotonic=ticks)
        two = WarmupCounter(store, schedules, clock, flush_seconds=5, monotonic=ticks)
        try:
            first = await one.acquire(["127.0.0.2"], 1)
            second = await one.acquire(["127.0.0.2"], 1)
            assert first is not None and second is not None
            one.commit(first)
            one.release(second)  # never sent: not counted
            assert one.used("127.0.0.2") == 1
            await one.sync()
            assert await store.ip_usage(date(2026, 3, 1)) == {"127.0.0.2": 1}
            r = await two.acquire(["127.0.0.2"], 2)  # sees the other's 1 after its own sync
            assert r is not None and two.used("127.0.0.2") == 3
            two.commit(r)
            assert await two.acquire(["127.0.0.2"], 1) is None  # 3 of 3
            await two.sync()
            ticks.t += 5  # `one` syncs on its next acquire and learns of the other's 2
            assert await one.acquire(["127.0.0.2"], 1) is None
            assert one.next_day() == datetime(2026, 3, 2, tzinfo=UTC)
            clock.at += timedelta(hours=1)  # a new UTC day: cap 5, nothing sent yet
            r = await one.acquire(["127.0.0.2"], 1)
            assert r is not None and r.day == date(2026, 3, 2)
            one.commit(r)
            await one.sync()
            assert await store.ip_usage(date(2026, 3, 2)) == {"127.0.0.2": 1}
            assert await store.ip_usage(date(2026, 3, 1)) == {"127.0.0.2": 3}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_capped_address_passes_the_job_to_another_of_the_pool(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                                 inline_max=64 * 1024)
        clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        schedules = {"127.0.0.3": WarmupSchedule(date(2026, 3, 1), caps=(1,))}
        counter = WarmupCounter(store, schedules, clock)
        try:
            picked = []
            for _ in range(4):
                r = await counter.acquire(["127.0.0.3", "127.0.0.4"], 1)
                assert r is not None
                counter.commit(r)
                picked.append(r.address)
            assert picked.count("127.0.0.3") == 1 and picked.count("127.0.0.4") == 3
            # An address with an idle connection to the destination is preferred.
            r = await counter.acquire(["127.0.0.5", "127.0.0.4"], 1, prefer={"127.0.0.4"})
            assert r is not None and r.address == "127.0.0.4"
        finally:
            await store.close()

    asyncio.run(scenario())


CONFIG = """
[server]
workers = 2

[delivery]
per_destination_connections = 7

[shaping]
messages_per_minute = 120
default_pool = "main"

[shaping.providers.google]
connections = 4

[shaping.providers."example.net"]
messages_per_minute = 10

[shaping.providers.bigcorp]
mx_suffixes = [".mx.bigcorp.example"]
connections = 6

[shaping.pools.main]
addresses = ["127.0.0.2"]

[shaping.pools.bulk]
addresses = ["127.0.0.3"]
priorities = ["bulk"]

[shaping.warmup."127.0.0.3"]
start = "2026-03-01"
caps = [50, 100]
"""


def test_settings_tables_of_tables_and_the_wiring(tmp_path: Path) -> None:
    path = tmp_path / "mailprime.toml"
    path.write_text(CONFIG)
    settings = load_settings(path, {})
    cfg = settings.shaping
    assert cfg.providers["google"].connections == 4
    assert cfg.providers["google"].messages_per_connection is None
    assert cfg.providers["bigcorp"].mx_suffixes == [".mx.bigcorp.example"]
    assert cfg.pools["bulk"].priorities == ["bulk"]
    assert cfg.warmup["127.0.0.3"].caps == [50, 100]

    async def scenario() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", spool_dir=tmp_path / "spool",
                                 inline_max=64 * 1024)
        try:
            shaping = build_shaping(settings, store, FakeClock(datetime(2026, 3, 1, tzinfo=UTC)))
        finally:
            await store.close()
        table = shaping.providers
        # Two processes: each has half of a node's limits (connections at least 1).
        assert table.limits("google") == GroupLimits(2, 50, 3000.0)
        assert table.limits("example.net") == GroupLimits(7, 100, 5.0)
        assert table.group_of_host("a.mx.bigcorp.example") == "bigcorp"
        assert table.limits("bigcorp").connections == 3
        # A group without a limit of its own: [delivery] per_destination_connections per process.
        assert table.limits("b.test") == GroupLimits(7, 100, 60.0)
        assert shaping.pools is not None and shaping.warmup is not None
        bulk = shaping.pools.choose("a@x.test", Priority.BULK)
        assert bulk is not None and bulk.addresses == ("127.0.0.3",)
        assert shaping.warmup.cap("127.0.0.3") == 50

    asyncio.run(scenario())


@pytest.mark.parametrize(("text", "message"), [
    ("[shaping.providers.google]\nconnections = \"x\"\n",
     "[shaping.providers.google] connections (line 2): expected an integer, got 'x'"),
    ("[shaping.providers.google]\nconections = 3\n",
     "[shaping.providers.google] conections (line 2): unknown setting; known: connections, "
     "messages_per_connection, messages_per_minute, mx_suffixes"),
    ('[shaping.warmup."127.0.0.3"]\nstart = "2026-03-01"\nbogus = 1\n',
     '[shaping.warmup."127.0.0.3"] bogus (line 3): unknown setting; known: caps, days, factor, '
     'first, start'),
    ("[shaping]\nproviders = 3\n", "[shaping] providers (line 2): expected a table, got int"),
    ("[shaping.pools]\nmain = 3\n", "[shaping.pools.main]: expected a table, got int"),
    ("[shaping.pools.main]\naddresses = []\n",
     "[shaping.pools.main] addresses: at least one is needed"),
    ("[shaping.pools.main]\naddresses = [\"127.0.0.2\"]\npriorities = [\"urgent\"]\n",
     "[shaping.pools.main] priorities: 'urgent' is not one of 'transactional', 'normal', 'bulk'"),
    ("[shaping]\ndefault_pool = \"nope\"\n", "[shaping] default_pool: no pool 'nope'"),
    ('[shaping.warmup."127.0.0.3"]\nstart = "March"\n',
     '[shaping.warmup."127.0.0.3"] start: expected a date YYYY-MM-DD, got \'March\''),
    ('[shaping.warmup."127.0.0.3"]\nstart = "2026-03-01"\n',
     '[shaping.warmup."127.0.0.3"]: caps must not be negative; without caps, first must be at '
     'least 1, factor above 1 and days at least 1'),
    ("[shaping.providers.google]\nconnections = 0\n",
     "[shaping.providers.google] connections and messages_per_connection must be at least 1, "
     "messages_per_minute not negative"),
])
def test_settings_errors_name_the_table_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mailprime.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(info.value) == message
