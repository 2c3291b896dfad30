"""DKIM as use cases: managing the keys of each sending domain (`DkimKeys`, behind the CLI) and
signing the mail that leaves (`DkimSigner`, called once per message at accept time).

Rotation without downtime (domain.dkim has the key states): `generate` publishes a new key;
it signs at once only if its domain has no active key of that type yet, otherwise it waits,
published, until the operator has seen its TXT record in DNS and calls `activate`; the key it
replaces stays published (mail signed with it is still in flight or in mailboxes) until
`retire`. Signers in every process pick the change up within `KEY_CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailprime.domain.address import normalize_domain
from mailprime.domain.clock import Clock, unix_time
from mailprime.domain.dkim import DkimKey, DkimKeyState, DkimKeyType
from mailprime.domain.errors import DomainError, InvalidAddress, NotFound
from mailprime.logline import emit
from mailprime.message.dkim import (
    DkimAlgorithm,
    DkimKeyError,
    SigningKey,
    finish_signatures,
    from_value_domain,
    generate_private_key,
    is_valid_selector,
    load_private_key,
    pending_with,
    public_key_record,
    record_name,
    sign_with,
    signable_header,
    unsigned_fields,
    zone_line,
)
from mailprime.message.dkim_canon import MessageHasher
from mailprime.storage.ports import DkimKeyStore

log = logging.getLogger("mailprime.dkim")

# How long a signer trusts the keys it loaded: an activation or retirement by the CLI (any
# process, any node) reaches every signer within this time, and signing costs no query.
KEY_CACHE_SECONDS = 30.0
SELECTOR_PREFIX = "mp"
_SELECTOR_SUFFIX = {DkimKeyType.RSA: "rsa", DkimKeyType.ED25519: "ed"}


class DkimKeyRefused(DomainError):
    """A key operation that would break signing or reuse a name; the text says why."""

    http_status = 409


def algorithm_of(key_type: DkimKeyType) -> DkimAlgorithm:
    return DkimAlgorithm.from_key_type(key_type.value)


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """The TXT record that publishes one key (RFC 6376 3.6.2.1)."""

    key: DkimKey
    record: str  # "v=DKIM1; k=...; p=..."

    @property
    def name(self) -> str:
        return record_name(self.key.domain, self.key.selector)

    @property
    def zone_line(self) -> str:
        return zone_line(self.key.domain, self.key.selector, self.record)


def publish(key: DkimKey) -> PublishedRecord:
    return PublishedRecord(key, public_key_record(load_private_key(key.private_key)))


def _domain(name: str) -> str:
    return normalize_domain(name)  # InvalidAddress reaches the caller as is


class DkimKeys:
    """Key management: what `mailprime dkim ...` does."""

    def __init__(self, store: DkimKeyStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def generate(self, domain: str, *, selector: str | None = None,
                       key_type: DkimKeyType | None = None) -> list[DkimKey]:
        """New keys for `domain`: of `key_type`, or one of each (RSA-2048 and Ed25519, for dual
        signatures) when None. A selector is chosen when not given ("mp" + year and month +
        "-rsa"/"-ed"). Each new key is active only if the domain has no active key of its type."""
        domain = _domain(domain)
        types = [key_type] if key_type is not None else [DkimKeyType.RSA, DkimKeyType.ED25519]
        if selector is not None:
            selector = selector.lower()
            if len(types) > 1:
                raise DkimKeyRefused("a selector names one key: give --algorithm with --selector")
            if not is_valid_selector(selector):
                raise DkimKeyRefused(f"{selector!r} is not a selector (DNS labels: letters, "
                                     "digits, hyphens; RFC 6376 3.1)")
        existing = list(await self.store.list_dkim_keys(domain))
        taken = {k.selector for k in existing}
        created: list[DkimKey] = []
        now = self.clock.now()
        for kind in types:
            name = selector or self._free_selector(kind, taken)
            if name in taken:
                raise DkimKeyRefused(f"{domain} already has a key with selector {name} "
                                     "(a selector is never reused: choose another)")
            taken.add(name)
            active = not any(k.key_type is kind and k.state is DkimKeyState.ACTIVE
                             for k in existing)
            key = DkimKey(domain=domain, selector=name, key_type=kind,
                          private_key=generate_private_key(algorithm_of(kind)), created_at=now,
                          active=active)
            await self.store.add_dkim_key(key)
            created.append(key)
            emit(log, "dkim", domain=domain, selector=name, key_type=kind.value,
                 state=key.state.value, status="key generated")
        return created

    def _free_selector(self, kind: DkimKeyType, taken: set[str]) -> str:
        stamp = self.clock.now().strftime("%Y%m")
        suffix = _SELECTOR_SUFFIX[kind]
        for letter in ("", *"bcdefghijklmnopqrstuvwxyz"):
            name = f"{SELECTOR_PREFIX}{stamp}{letter}-{suffix}"
            if name not in taken:
                return name
        raise DkimKeyRefused(f"no free default selector left for {stamp}: give --selector")

    async def keys(self, domain: str | None = None) -> Sequence[DkimKey]:
        return await self.store.list_dkim_keys(_domain(domain) if domain is not None else None)

    async def records(self, domain: str | None = None) -> list[PublishedRecord]:
        """The TXT records to publish: every key not retired (active or waiting or replaced)."""
        return [publish(k) for k in await self.keys(domain) if k.state is not DkimKeyState.RETIRED]

    async def _find(self, domain: str, selector: str) -> DkimKey:
        for key in await self.keys(domain):
            if key.selector == selector.lower():
                return key
        raise NotFound(f"no DKIM key {selector.lower()} for {domain}")

    async def activate(self, domain: str, selector: str) -> tuple[DkimKey, list[DkimKey]]:
        """Makes the key its type's signing key; returns it and the key(s) it replaced (still
        published: retire them once mail signed with them has been delivered)."""
        domain = _domain(domain)
        key = await self._find(domain, selector)
        if key.state is DkimKeyState.RETIRED:
            raise DkimKeyRefused(f"key {key.selector} of {domain} is retired; generate a new one")
        replaced = [k for k in await self.keys(domain)
                    if k.key_type is key.key_type and k.active and k.selector != key.selector]
        activated = await self.store.activate_dkim_key(domain, key.selector)
        emit(log, "dkim", domain=domain, selector=key.selector, key_type=key.key_type.value,
             replaced=",".join(k.selector for k in replaced) or None, status="key activated")
        return activated, replaced

    async def retire(self, domain: str, selector: str, *, force: bool = False) -> DkimKey:
        """Retires a published key. The active key is refused unless `force`: its domain would
        go unsigned for that type."""
        domain = _domain(domain)
        key = await self._find(domain, selector)
        if key.state is DkimKeyState.RETIRED:
            raise DkimKeyRefused(f"key {key.selector} of {domain} is retired already")
        if key.active and not force:
            raise DkimKeyRefused(
                f"key {key.selector} signs {domain}'s mail now: activate another "
                f"{key.key_type.value} key first, or pass --force to stop signing with it")
        retired = await self.store.retire_dkim_key(domain, key.selector, self.clock.now())
        emit(log, "dkim", domain=domain, selector=key.selector, key_type=key.key_type.value,
             status="key retired")
        return retired


class DkimSigner:
    """Signs messages with the active keys of their From domain (RFC 6376; RSA-SHA256 and
    Ed25519-SHA256 per RFC 8463): one DKIM-Signature field per active key.

    The active keys of all domains are loaded in one query and kept `ttl` seconds (parsed keys
    are reused across reloads), so signing asks the database nothing. A store that fails to
    answer leaves the previous keys in use (logged); a key whose PEM cannot be read is skipped
    (logged) and the message goes out with the signatures that could be made."""

    def __init__(self, store: DkimKeyStore, clock: Clock, *, ttl: float = KEY_CACHE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._unix_time = unix_time(clock)  # t= of each signature
        self.ttl = ttl
        self._monotonic = monotonic
        self._keys: dict[str, tuple[SigningKey, ...]] = {}
        self._parsed: dict[tuple[str, str], tuple[str, SigningKey]] = {}  # -> (pem, key)
        self._expires = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        if self._monotonic() < self._expires:
            return
        async with self._lock:  # one reload however many sessions notice the expiry at once
            if self._monotonic() < self._expires:
                return
            try:
                rows = await self.store.list_dkim_keys(active_only=True)
            except DomainError as exc:
                emit(log, "dkim", logging.ERROR, status="key reload failed", reason=exc.message)
                self._expires = self._monotonic() + min(self.ttl, 5.0)
                return
            by_domain: dict[str, list[SigningKey]] = {}
            parsed: dict[tuple[str, str], tuple[str, SigningKey]] = {}
            for row in rows:
                signing = self._load(row)
                if signing is not None:
                    parsed[(row.domain, row.selector)] = (row.private_key, signing)
                    by_domain.setdefault(row.domain, []).append(signing)
            self._parsed = parsed
            self._keys = {d: tuple(keys) for d, keys in by_domain.items()}
            self._expires = self._monotonic() + self.ttl

    def _load(self, row: DkimKey) -> SigningKey | None:
        cached = self._parsed.get((row.domain, row.selector))
        if cached is not None and cached[0] == row.private_key:
            return cached[1]
        try:
            return SigningKey(row.domain, row.selector, load_private_key(row.private_key))
        except DkimKeyError as exc:
            emit(log, "dkim", logging.ERROR, domain=row.domain, selector=row.selector,
                 status="key unusable", reason=str(exc))
            return None

    def invalidate(self) -> None:
        """Reload the keys on next use (a key change made in this process need not wait)."""
        self._expires = float("-inf")

    async def keys_for(self, domain: str) -> tuple[SigningKey, ...]:
        await self._refresh()
        return self._keys.get(domain.lower(), ())

    async def signs_anything(self) -> bool:
        """Whether any domain has an active key: if not, hashing bodies would be wasted."""
        await self._refresh()
        return bool(self._keys)

    def new_hasher(self) -> MessageHasher:
        """A hasher to feed the message to as it streams in (see `signature_for`)."""
        return MessageHasher()

    async def signature_for(self, header_section: bytes, bh: bytes) -> bytes:
        """The DKIM-Signature fields for a message with this header section and body hash, or
        b"" when its From domain has no active key."""
        header = signable_header(header_section)
        domain = from_value_domain(header.from_value)
        if domain is None:
            return b""
        keys = await self.keys_for(domain)
        if not keys:
            return b""
        try:
            return finish_signatures(unsigned_fields(header, bh, keys,
                                                     int(self._unix_time())))
        except (ValueError, UnicodeError) as exc:  # a header we cannot canonicalize: unsigned
            emit(log, "dkim", logging.ERROR, domain=domain, status="not signed", reason=str(exc))
            return b""

    async def sign(self, message: bytes) -> bytes:
        """`message` with its DKIM-Signature fields on top (unchanged if none apply)."""
        if self._monotonic() >= self._expires:
            await self._refresh()
        return sign_with(message, self._keys, int(self._unix_time()))

    async def key_material(self, domain: str) -> tuple[tuple[str, str, str], ...]:
        """(domain, selector, PEM) of `domain`'s active keys, in signing order, reloaded when
        due: what a worker process needs to sign as `sign` does (marketing.build_pool)."""
        if self._monotonic() >= self._expires:
            await self._refresh()
        try:
            keys = self._keys.get(normalize_domain(domain), ())  # keyed by A-label, as signing
        except InvalidAddress:
            return ()
        return tuple((key.domain, key.selector, self._parsed[(key.domain, key.selector)][0])
                     for key in keys)

    async def deferred_signer(self) -> Callable[[bytes], Callable[[], bytes]]:
        """Signing in two steps, for a caller that runs the private-key work on other threads
        (campaign dispatch: `cryptography` releases the GIL while OpenSSL signs, so the RSA
        signatures run on another core while the event loop renders).

        `prepare = await signer.deferred_signer()`; then on the loop `finish = prepare(message)`
        does the Python part (split, canonicalize, hash: under the GIL, so on a thread it would
        only contend), and on any thread `finish()` makes the signatures and returns the signed
        message (`sign`'s result). The keys are the ones loaded now (reloaded first when due):
        ask again now and then (a batch at a time) so a key change reaches the caller within
        the cache time."""
        if self._monotonic() >= self._expires:
            await self._refresh()
        keys_by_domain = self._keys  # replaced, never changed in place, by _refresh

        def prepare(message: bytes) -> Callable[[], bytes]:
            pending = pending_with(message, keys_by_domain, int(self._unix_time()))
            if not pending:
                return lambda: message
            return lambda: finish_signatures(pending) + message

        return prepare

__all__ = [
    "KEY_CACHE_SECONDS",
    "DkimKeyRefused",
    "DkimKeys",
    "DkimSigner",
    "PublishedRecord",
    "publish",
]
