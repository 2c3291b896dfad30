"""`mailprime suppression list|add|remove|check`: the real command against a database made by
`init` (which also writes the VERP key)."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from mailprime.config import load_settings
from mailprime.domain.deliverability import Suppression, SuppressionReason
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.services.verp_key import read_secrets
from mailprime.storage.sql import SqlStore, open_store
from tests.cli.conftest import DataDir, run_cli

pytestmark = pytest.mark.slow  # runs the real command

T = TypeVar("T")
WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def with_store(data_dir: DataDir, action: Callable[[SqlStore], Awaitable[T]]) -> T:
    settings = load_settings(data_dir.config, environ={})

    async def run() -> T:
        store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                 inline_max=settings.storage.inline_max)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def events(data_dir: DataDir) -> list[tuple[EventKind, str | None, str | None]]:
    async def read(store: SqlStore) -> list[tuple[EventKind, str | None, str | None]]:
        return [(e.kind, e.recipient, dict(e.attrs).get("scope")) for e in await store.list_events()]

    return with_store(data_dir, read)


def seed(data_dir: DataDir) -> None:
    """bob on the global list (a hard bounce), carol on a.test's own (by hand)."""

    async def add(store: SqlStore) -> None:
        await store.suppress(Suppression("bob@b.test", "", SuppressionReason.HARD_BOUNCE, WHEN,
                                         "550 5.1.1 user unknown", QueueId("0ZC1F4XKSNT6B7D8G9")))
        await store.suppress(Suppression("carol@b.test", "a.test", SuppressionReason.MANUAL,
                                         WHEN, "asked by phone"))

    with_store(data_dir, add)


def test_init_writes_a_private_verp_key(data_dir: DataDir) -> None:
    settings = load_settings(data_dir.config, environ={})
    path = settings.bounces.secret_path(settings.data_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = read_secrets(path)
    assert len(key) == 32
    assert "VERP key" in data_dir.init_output.out


def test_add(data_dir: DataDir) -> None:
    added, scoped = data_dir.cli_many(
        ("suppression", "add", "Bob@B.test", "--note", "asked by phone"),
        ("suppression", "add", "carol@b.test", "--domain", "A.test"))
    assert added.code == 0 and "bob@b.test: suppressed (global list)" in added.text
    assert scoped.code == 0 and "carol@b.test: suppressed (a.test list)" in scoped.text
    again = data_dir.cli("suppression", "add", "bob@b.test")
    assert again.code == 0 and "already suppressed" in again.text
    assert sorted(events(data_dir)) == [(EventKind.SUPPRESSED, "bob@b.test", "global"),
                                        (EventKind.SUPPRESSED, "carol@b.test", "a.test")]

    async def entry(store: SqlStore) -> Suppression | None:
        return await store.find_suppression("bob@b.test")

    found = with_store(data_dir, entry)
    assert found is not None
    assert (found.reason, found.detail) == (SuppressionReason.MANUAL, "asked by phone")


def test_check(data_dir: DataDir) -> None:
    seed(data_dir)
    bob, carol_a, carol_x, dave = data_dir.cli_many(
        ("suppression", "check", "BOB@b.test"),
        ("suppression", "check", "carol@b.test", "--domain", "a.test"),
        ("suppression", "check", "carol@b.test", "--domain", "x.test"),
        ("suppression", "check", "dave@b.test"))
    assert bob.code == 1
    assert "bob@b.test: suppressed (hard bounce on 2030-01-02, global list)" in bob.text
    assert "evidence: 550 5.1.1 user unknown" in bob.text
    assert carol_a.code == 1 and "added by an operator on 2030-01-02, a.test list" in carol_a.text
    assert (carol_x.code, dave.code) == (0, 0)
    assert "dave@b.test: not suppressed" in dave.text


def test_list(data_dir: DataDir) -> None:
    seed(data_dir)
    glob, everything, only_a = data_dir.cli_many(
        ("suppression", "list"), ("suppression", "list", "--all"),
        ("suppression", "list", "--domain", "a.test"))
    assert "bob@b.test" in glob.out and "carol@b.test" not in glob.out
    assert "1 suppressed" in glob.out
    assert all(v in glob.out for v in ("hard_bounce", "0ZC1F4XKSNT6B7D8G9", "2030-01-02 03:04"))
    assert "2 suppressed" in everything.out and "carol@b.test" in everything.out
    assert "carol@b.test" in only_a.out and "bob@b.test" not in only_a.out


def test_remove(data_dir: DataDir) -> None:
    seed(data_dir)
    removed, everywhere = data_dir.cli_many(("suppression", "remove", "BOB@b.test"),
                                            ("suppression", "remove", "carol@b.test", "--all"))
    assert removed.code == 0 and "bob@b.test: removed (1 entry)" in removed.text
    assert everywhere.code == 0
    gone = data_dir.cli("suppression", "remove", "bob@b.test")
    assert gone.code == 1 and "bob@b.test is not suppressed on the global list" in gone.text
    assert sorted(events(data_dir)) == [(EventKind.UNSUPPRESSED, "bob@b.test", "global"),
                                        (EventKind.UNSUPPRESSED, "carol@b.test", "all")]


def test_bad_input(data_dir: DataDir) -> None:
    bad, bad_domain, bad_limit = data_dir.cli_many(
        ("suppression", "add", "not-an-address"),
        ("suppression", "add", "a@b.test", "--domain", "bad domain"),
        ("suppression", "list", "--limit", "0"))
    assert bad.code == 2 and "not an address" in bad.text
    assert bad_domain.code == 2
    assert bad_limit.code == 2


def test_help(data_dir: DataDir) -> None:
    helps = data_dir.cli_many(*(("suppression", name, "--help")
                                for name in ("list", "add", "remove", "check")))
    group = run_cli("suppression", "--help", cwd=data_dir.root)
    assert all(h.code == 0 for h in (group, *helps))
    assert all(word in group.text for word in ("list", "add", "remove", "check"))
    assert "exit status 1 if it is suppressed" in helps[3].text
