"""The ApiKeyStore port on SQLite and PostgreSQL (see conftest.py): add, find, list, revoke, and
the last-use time written at most once per interval."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mailprime.domain.api_keys import grants, hash_secret, new_api_key, parse_api_key
from mailprime.domain.errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from tests.storage.conftest import Backend


async def test_add_find_list_and_revoke(backend: Backend) -> None:
    async with backend.open() as store:
        made = new_api_key()
        now = backend.clock.now()
        key = await store.add_api_key("deploy", made.prefix, made.secret_hash,
                                      frozenset({"suppressions:read", "contacts:*"}), now)
        found = await store.find_api_key(made.prefix)
        assert found == key
        assert (found.name, found.scopes, found.created_at, found.last_used_at, found.active) == (
            "deploy", frozenset({"suppressions:read", "contacts:*"}), now, None, True)
        # The text shown once parses back to the prefix and a secret that hashes to the row's.
        prefix, secret = parse_api_key(made.text) or ("", "")
        assert prefix == made.prefix and hash_secret(secret) == found.secret_hash
        assert made.secret_hash not in made.text
        assert await store.find_api_key("000000000000") is None

        with pytest.raises(AlreadyExists):  # one unrevoked key per name
            other = new_api_key()
            await store.add_api_key("deploy", other.prefix, other.secret_hash, frozenset({"*"}), now)
        with pytest.raises(AlreadyExists):  # a prefix names one key for ever
            await store.add_api_key("again", made.prefix, made.secret_hash, frozenset({"*"}), now)

        backend.clock.advance(5)
        revoked = await store.revoke_api_key("deploy", backend.clock.now())
        assert revoked.revoked_at == backend.clock.now() and not revoked.active
        with pytest.raises(NotFound):
            await store.revoke_api_key("deploy", backend.clock.now())
        assert await store.list_api_keys() == []
        # The name is free again; the revoked key stays listed with --all.
        second = new_api_key()
        await store.add_api_key("deploy", second.prefix, second.secret_hash, frozenset({"*"}), now)
        everything = await store.list_api_keys(include_revoked=True)
        assert [(k.prefix, k.active) for k in everything] == [(made.prefix, False),
                                                             (second.prefix, True)]
        await store.revoke_api_key(second.prefix, now)  # by prefix as well
        assert await store.list_api_keys() == []


async def test_last_use_is_written_at_most_once_per_interval(backend: Backend) -> None:
    async with backend.open() as store:
        made = new_api_key()
        key = await store.add_api_key("k", made.prefix, made.secret_hash, frozenset({"*"}),
                                      backend.clock.now())
        first = backend.clock.now()
        assert await store.touch_api_key(key.id, first, 60) is True
        assert await store.touch_api_key(key.id, backend.clock.advance(59), 60) is False
        assert (await store.find_api_key(made.prefix)).last_used_at == first  # type: ignore[union-attr]
        later = backend.clock.advance(1)
        assert await store.touch_api_key(key.id, later, 60) is True
        assert (await store.find_api_key(made.prefix)).last_used_at == later  # type: ignore[union-attr]


def test_scopes_grant_what_they_name() -> None:
    assert grants(frozenset({"*"}), "campaigns:send")
    assert grants(frozenset({"contacts:*"}), "contacts:write")
    assert grants(frozenset({"contacts:read"}), "contacts:read")
    assert not grants(frozenset({"contacts:read"}), "contacts:write")
    assert not grants(frozenset({"contacts:*"}), "lists:read")
