"""API key authentication and scope checks, as FastAPI dependencies.

Theory of operation. A request names its key in `Authorization: Bearer mp_<prefix>_<secret>`
(RFC 6750 2.1). The prefix finds the row (one indexed read, every request: a revocation takes
effect at once, with no cache to expire); the SHA-256 of the secret is compared with the stored
one by hmac.compare_digest, so the time taken does not say how much of a guess was right. A
missing, malformed, unknown, wrong or revoked key gets the same 401 problem with
`WWW-Authenticate: Bearer` (RFC 6750 3: error="invalid_token" when a token was given), so a
prober learns nothing about which keys exist. A good key without the route's scope gets 403
(error="insufficient_scope", RFC 6750 3.1). The key's last use is written at most once a
minute: a small map here skips the write locally, and the store's own condition skips it
across processes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailprime.domain.api_keys import ApiKey, grants, hash_secret, parse_api_key
from mailprime.domain.ids import ApiKeyId
from mailprime.web.deps import WebDeps

TOUCH_INTERVAL = 60.0  # seconds between writes of a key's last use
_REALM = 'Bearer realm="mailprime"'
_DUMMY_HASH = hash_secret("x" * 43)

bearer = HTTPBearer(auto_error=False, description="An API key: `mp_<prefix>_<secret>`.")


def _unauthorized(detail: str, token_given: bool) -> HTTPException:
    challenge = _REALM + (', error="invalid_token"' if token_given else "")
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


class KeyChecker:
    """Finds and checks the key of a request; remembers when it last noted each key's use."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        self._touched: dict[ApiKeyId, datetime] = {}

    async def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
        if credentials is None:
            raise _unauthorized("an API key is required (Authorization: Bearer mp_...)", False)
        parsed = parse_api_key(credentials.credentials)
        key = await self.deps.store.find_api_key(parsed[0]) if parsed else None
        # Compared even when nothing was found, so that the answer takes as long either way.
        good = hmac.compare_digest(hash_secret(parsed[1]) if parsed else _DUMMY_HASH,
                                   key.secret_hash if key else _DUMMY_HASH)
        if key is None or not good or not key.active:
            raise _unauthorized("the API key is not valid (unknown, wrong or revoked)", True)
        await self._note_use(key)
        return key

    async def _note_use(self, key: ApiKey) -> None:
        now = self.deps.clock.now()
        last = self._touched.get(key.id) or key.last_used_at
        if last is not None and (now - last).total_seconds() < TOUCH_INTERVAL:
            return
        self._touched[key.id] = now
        await self.deps.store.touch_api_key(key.id, now, TOUCH_INTERVAL)


def require(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the request's key, which must grant `scope` ("resource:action")."""

    async def dependency(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiKey:
        checker: KeyChecker = request.app.state.keys
        key = await checker.authenticate(credentials)
        check_scope(key, scope)
        return key

    return dependency


def check_scope(key: ApiKey, scope: str, why: str = "") -> None:
    """403 unless `key` grants `scope`: for a route whose scope depends on what it finds."""
    if not grants(key.scopes, scope):
        raise HTTPException(403, f"this API key lacks the scope {scope}{why}", headers={
            "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'})


__all__ = ["KeyChecker", "check_scope", "require"]
