"""ApiKeyStore delegation (issue 5): HTTP API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from mailprime.domain.api_keys import ApiKey
from mailprime.domain.ids import ApiKeyId
from mailprime.storage.sql import api_keys
from mailprime.storage.sql.access import SqlAccess


class ApiKeySql(SqlAccess):
    """The ApiKeyStore port's methods, on the writer and the read pool."""

    async def add_api_key(self, name: str, prefix: str, secret_hash: str, scopes: frozenset[str],
                          created_at: datetime) -> ApiKey:
        return await self._writer.run(
            lambda c: api_keys.add_key(c, name, prefix, secret_hash, scopes, created_at=created_at))

    async def find_api_key(self, prefix: str) -> ApiKey | None:
        return await self._read(lambda c: api_keys.find_key(c, prefix))

    async def list_api_keys(self, *, include_revoked: bool = False) -> Sequence[ApiKey]:
        return await self._read(lambda c: api_keys.list_keys(c, include_revoked))

    async def revoke_api_key(self, name_or_prefix: str, at: datetime) -> ApiKey:
        return await self._writer.run(lambda c: api_keys.revoke_key(c, name_or_prefix, at))

    async def touch_api_key(self, key_id: ApiKeyId, at: datetime, min_interval: float) -> bool:
        return await self._writer.run(
            lambda c: api_keys.touch_key(c, key_id, at, timedelta(seconds=min_interval)))
