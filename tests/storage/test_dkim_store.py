"""The DkimKeyStore port on SQLite and PostgreSQL (see conftest.py): add, list, activate (one
active key per domain and type, switched in one transaction), retire."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from mailprime.domain.dkim import DkimKey, DkimKeyState, DkimKeyType
from mailprime.domain.errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from tests.storage.conftest import Backend


def key(backend: Backend, selector: str, key_type: DkimKeyType = DkimKeyType.RSA, *,
        domain: str = "example.com", active: bool = False, age: float = 0) -> DkimKey:
    return DkimKey(domain=domain, selector=selector, key_type=key_type,
                   private_key=f"PEM of {selector}", created_at=backend.clock.now() - timedelta(seconds=age),
                   active=active)


def states(keys: list[DkimKey] | tuple[DkimKey, ...]) -> dict[str, DkimKeyState]:
    return {k.selector: k.state for k in keys}


async def test_add_and_list(backend: Backend) -> None:
    async with backend.open() as store:
        assert await store.list_dkim_keys() == []
        await store.add_dkim_key(key(backend, "new", active=True))
        await store.add_dkim_key(key(backend, "old", DkimKeyType.ED25519, age=60))
        await store.add_dkim_key(key(backend, "other", domain="b.test", active=True))
        listed = list(await store.list_dkim_keys())
        assert [(k.domain, k.selector) for k in listed] == [
            ("b.test", "other"), ("example.com", "old"), ("example.com", "new")]
        new = listed[2]
        assert (new.key_type, new.private_key, new.created_at, new.active, new.retired_at) == (
            DkimKeyType.RSA, "PEM of new", backend.clock.now(), True, None)
        assert "PEM" not in repr(new)  # private keys stay out of logs
        assert [k.selector for k in await store.list_dkim_keys("example.com")] == ["old", "new"]
        assert [k.selector for k in await store.list_dkim_keys(active_only=True)] == ["other", "new"]
        with pytest.raises(AlreadyExists):
            await store.add_dkim_key(key(backend, "new", DkimKeyType.ED25519))


async def test_activate_switches_one_key_per_type(backend: Backend) -> None:
    async with backend.open() as store:
        await store.add_dkim_key(key(backend, "rsa1", active=True))
        await store.add_dkim_key(key(backend, "rsa2"))
        await store.add_dkim_key(key(backend, "ed1", DkimKeyType.ED25519, active=True))
        await store.add_dkim_key(key(backend, "rsa-b", domain="b.test", active=True))
        activated = await store.activate_dkim_key("example.com", "rsa2")
        assert activated.active and activated.selector == "rsa2"
        assert states(list(await store.list_dkim_keys("example.com"))) == {
            "rsa1": DkimKeyState.PUBLISHED, "rsa2": DkimKeyState.ACTIVE, "ed1": DkimKeyState.ACTIVE}
        assert states(list(await store.list_dkim_keys("b.test"))) == {"rsa-b": DkimKeyState.ACTIVE}
        await store.activate_dkim_key("example.com", "rsa2")  # idempotent
        with pytest.raises(NotFound):
            await store.activate_dkim_key("example.com", "nope")


async def test_retire(backend: Backend) -> None:
    async with backend.open() as store:
        await store.add_dkim_key(key(backend, "rsa1", active=True))
        retired = await store.retire_dkim_key("example.com", "rsa1", backend.clock.advance(5))
        assert retired.state is DkimKeyState.RETIRED and not retired.active
        assert retired.retired_at == backend.clock.now()
        assert await store.list_dkim_keys(active_only=True) == []
        for again in (store.retire_dkim_key("example.com", "rsa1", backend.clock.now()),
                      store.activate_dkim_key("example.com", "rsa1")):
            with pytest.raises(NotFound):
                await again
        with pytest.raises(AlreadyExists):  # a selector once used is never reused
            await store.add_dkim_key(key(backend, "rsa1"))
