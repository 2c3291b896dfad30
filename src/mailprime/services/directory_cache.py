"""A read-through cache of the directory look-ups done on every RCPT (local domain? account?
aliases?), so a busy MX does not ask the database several times per recipient.

Why a time-bounded cache: the directory changes rarely (an operator's CLI command, possibly
from another process or node), while look-ups happen per recipient. Entries live `ttl` seconds
(default 2 s, like Postfix's proxymap-free table look-ups that re-read changed maps within
seconds), so a new account or domain is seen within that time; writes made through this object
invalidate at once. The cache is bounded in size (oldest entries dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from mailprime.domain.ids import AccountId
from mailprime.domain.mail import Account, Alias
from mailprime.storage.ports import DirectoryStore

MAX_ENTRIES = 50_000


class _Ttl:
    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self.data: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> tuple[bool, object]:
        hit = self.data.get(key)
        if hit is None or hit[0] < self.clock():
            return False, None
        return True, hit[1]

    def put(self, key: tuple[str, str], value: object) -> None:
        self.data[key] = (self.clock() + self.ttl, value)
        self.data.move_to_end(key)
        while len(self.data) > MAX_ENTRIES:
            self.data.popitem(last=False)

    def clear(self) -> None:
        self.data.clear()


class CachedDirectory:
    """Satisfies DirectoryStore; reads are cached, writes pass through and clear the cache."""

    def __init__(self, inner: DirectoryStore, ttl: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self._cache = _Ttl(ttl, clock)

    async def _cached(self, kind: str, key: str, load: Callable[[], Awaitable[object]]) -> object:
        found, value = self._cache.get((kind, key))
        if found:
            return value
        value = await load()
        self._cache.put((kind, key), value)
        return value

    # Cached reads ------------------------------------------------------------------------
    async def is_local_domain(self, name: str) -> bool:
        key = name.lower()
        return bool(await self._cached("domain", key, lambda: self.inner.is_local_domain(key)))

    async def get_account(self, address: str) -> Account | None:
        key = address.lower()
        value = await self._cached("account", key, lambda: self.inner.get_account(address))
        return value if isinstance(value, Account) else None

    async def resolve_aliases(self, address: str) -> Sequence[str]:
        key = address.lower()
        value = await self._cached("alias", key, lambda: self.inner.resolve_aliases(address))
        return tuple(value) if isinstance(value, list | tuple) else ()

    # Pass-through ------------------------------------------------------------------------
    async def get_account_by_id(self, account_id: AccountId) -> Account | None:
        return await self.inner.get_account_by_id(account_id)

    async def list_domains(self) -> Sequence[str]:
        return await self.inner.list_domains()

    async def list_accounts(self) -> Sequence[Account]:
        return await self.inner.list_accounts()

    async def list_aliases(self) -> Sequence[Alias]:
        return await self.inner.list_aliases()

    async def add_domain(self, name: str) -> None:
        self._cache.clear()
        await self.inner.add_domain(name)

    async def remove_domain(self, name: str) -> None:
        self._cache.clear()
        await self.inner.remove_domain(name)

    async def add_account(self, address: str, password_hash: str) -> Account:
        self._cache.clear()
        return await self.inner.add_account(address, password_hash)

    async def set_password(self, address: str, password_hash: str) -> None:
        self._cache.clear()
        await self.inner.set_password(address, password_hash)

    async def remove_account(self, address: str) -> None:
        self._cache.clear()
        await self.inner.remove_account(address)

    async def add_alias(self, source: str, destination: str) -> None:
        self._cache.clear()
        await self.inner.add_alias(source, destination)

    async def remove_alias(self, source: str, destination: str | None = None) -> None:
        self._cache.clear()
        await self.inner.remove_alias(source, destination)
