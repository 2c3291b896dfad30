"""The one login check of IMAP and POP3 (`check_login`) and its cache of recent good passwords:
hits skip Argon2, password changes and expiry make it miss, failures are never cached, the
other checks still run on a hit, size is bounded, and no plaintext is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailprime.domain.ids import AccountId
from mailprime.domain.mail import Account
from mailprime.proto.pop3.types import LoginAccepted
from mailprime.proto.smtp.types import PeerInfo
from mailprime.services.directory_cache import CachedDirectory
from mailprime.services.mail_auth import LoginCache, LoginFailure, check_login
from mailprime.services.passwords import hash_password
from mailprime.services.pop3 import Pop3Config, Pop3Service
from mailprime.storage.sql import SqlStore, open_store

ALICE = "alice@example.com"
PASSWORD = "correct horse battery staple"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def account(address: str = ALICE, password_hash: str = "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            number: int = 1) -> Account:
    return Account(AccountId(number), address, password_hash, datetime(2024, 1, 1, tzinfo=UTC))


@asynccontextmanager
async def directory(tmp: Path) -> AsyncIterator[SqlStore]:
    store = await open_store(f"sqlite:///{tmp / 'm.db'}", spool_dir=tmp / "spool", inline_max=64 * 1024)
    try:
        await store.add_domain("example.com")
        await store.add_account(ALICE, hash_password(PASSWORD))
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def no_threads() -> AsyncIterator[None]:
    """While inside, handing work to a thread (an Argon2 verification) raises RuntimeError."""
    loop = asyncio.get_running_loop()
    closed = ThreadPoolExecutor(max_workers=1)
    closed.shutdown()
    loop.set_default_executor(closed)
    try:
        yield
    finally:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))


# The cache on its own ---------------------------------------------------------------------------


def test_a_remembered_password_is_verified_until_the_ttl_ends() -> None:
    clock = Clock()
    cache = LoginCache(ttl=60.0, clock=clock)
    alice = account()
    assert not cache.verified(alice, PASSWORD)
    cache.remember(alice, PASSWORD)
    assert cache.verified(alice, PASSWORD)
    assert cache.verified(account(ALICE.upper()), PASSWORD)  # addresses compare case-insensitively
    assert not cache.verified(alice, PASSWORD + "!")
    assert not cache.verified(account("bob@example.com"), PASSWORD)
    clock.now += 59.9
    assert cache.verified(alice, PASSWORD)  # a hit does not extend the entry's life
    clock.now += 0.1
    assert not cache.verified(alice, PASSWORD)
    assert len(cache) == 0  # the expired entry is gone, not just ignored
    assert cache.hits == 3


def test_a_new_password_hash_makes_the_entry_miss() -> None:
    cache = LoginCache()
    cache.remember(account(password_hash="$argon2id$old"), PASSWORD)
    assert cache.verified(account(password_hash="$argon2id$old"), PASSWORD)
    assert not cache.verified(account(password_hash="$argon2id$new"), PASSWORD)


def test_the_cache_is_bounded_oldest_first_and_can_be_off() -> None:
    clock = Clock()
    cache = LoginCache(max_entries=3, clock=clock)
    users = [account(f"u{n}@example.com", number=n) for n in range(5)]
    for user in users:
        clock.now += 1
        cache.remember(user, PASSWORD)
    assert len(cache) == 3
    assert [cache.verified(u, PASSWORD) for u in users] == [False, False, True, True, True]
    off = LoginCache(ttl=0)
    off.remember(users[0], PASSWORD)
    assert len(off) == 0 and not off.verified(users[0], PASSWORD)


def test_no_plaintext_password_is_kept() -> None:
    cache = LoginCache()
    cache.remember(account(), PASSWORD)
    kept = repr(cache.__dict__).encode() + b"".join(cache.__dict__["_entries"])
    assert PASSWORD.encode() not in kept and b"horse" not in kept


# check_login with the cache ---------------------------------------------------------------------


def test_check_login_verifies_once_then_answers_from_the_cache(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path) as store:
            cache = LoginCache()
            first = await check_login(store, "", ALICE, PASSWORD, cache=cache)
            assert first.ok and cache.hits == 0 and len(cache) == 1
            async with no_threads():  # a hit needs no Argon2 verification, so no thread
                again = await check_login(store, "", ALICE, PASSWORD, cache=cache)
                assert again.ok and again.account == first.account and cache.hits == 1
                with pytest.raises(RuntimeError):  # a miss does verify (and here cannot)
                    await check_login(store, "", ALICE, "wrong", cache=cache)

    run(main())


def test_failures_are_not_cached_and_other_checks_still_run_on_a_hit(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path) as store:
            cache = LoginCache()
            assert (await check_login(store, "", ALICE, "wrong", cache=cache)).failure is \
                LoginFailure.BAD_PASSWORD
            assert (await check_login(store, "", "nobody@example.com", PASSWORD, cache=cache)).failure \
                is LoginFailure.UNKNOWN_USER
            assert len(cache) == 0
            assert (await check_login(store, "", ALICE, PASSWORD, cache=cache)).ok
            refused = await check_login(store, "bob@example.com", ALICE, PASSWORD, cache=cache)
            assert refused.failure is LoginFailure.AUTHZID and cache.hits == 1

    run(main())


def test_a_password_change_is_seen_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path) as store:
            cache = LoginCache()
            assert (await check_login(store, "", ALICE, PASSWORD, cache=cache)).ok
            await store.set_password(ALICE, hash_password("new password"))
            old = await check_login(store, "", ALICE, PASSWORD, cache=cache)
            assert old.failure is LoginFailure.BAD_PASSWORD
            assert (await check_login(store, "", ALICE, "new password", cache=cache)).ok
            assert cache.hits == 0

    run(main())


def test_pop3_logins_use_the_cache_it_is_given(tmp_path: Path) -> None:
    async def main() -> None:
        async with directory(tmp_path) as store:
            shared = LoginCache()
            service = Pop3Service(store, CachedDirectory(store, ttl=0), Pop3Config("pop.example.com"),
                                  logins=shared)
            for port in (1, 2):
                session = service.new_session(PeerInfo("127.0.0.1", port, "pop3"), True)
                assert isinstance(await session.on_login("USER", "", ALICE, PASSWORD), LoginAccepted)
            assert service.logins is shared and shared.hits == 1

    run(main())
