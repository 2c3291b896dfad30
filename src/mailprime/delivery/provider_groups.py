"""Provider groups: which shaping budget a destination belongs to, from its MX hosts.

Theory of operation. Domains that share mail servers share a budget (KumoMTA calls it "MX
rollup"): thousands of Google Workspace domains and gmail.com all reach *.google.com, so they
are one group, "google". `ProviderTable.group_of(routes)` names the group of a destination from
its most preferred MX host: the first provider rule whose MX suffix matches (longest suffix
first), else the host's registered domain from the public suffix list ("mx1.example.co.uk" ->
"example.co.uk"), else the host itself (an address literal, or a name with no registered part).
Grouping by the registered domain is a safe default: one company's MX hosts are one budget.

The built-in rules and their limits come from KumoMTA's published defaults
(assets/policy-extras/shaping.toml and the community shaping.toml, 2025-2026), which in turn
cite the providers' postmaster pages: Google 5 connections and 50 messages per connection,
Yahoo 20 messages per connection, Microsoft consumer and Office 365 5 and 50, Apple iCloud 10 and
5, GMX/web.de 4 and 20, Comcast 25 and 1000, Orange 3 connections, QQ 4 and 8, NetEase 4 and 7.
Mail.ru and Yandex publish no figures: they are grouped (so their domains share a budget) with
the default limits. The message rate of every built-in provider is KumoMTA's default
`max_message_rate` of 100 per second; the adaptive back-off of delivery.shaping finds the real
pace from the providers' replies.

The router's answers are cached briefly by `RouteCache` (concurrent look-ups of one domain are
shared), so that grouping a job costs no DNS query beyond the one its delivery needs anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from publicsuffixlist import PublicSuffixList

from mailprime.delivery.router import Route, Router, RoutingError
from mailprime.delivery.shaping import GroupLimits

DEFAULT_PROVIDER_RATE = 6000.0  # messages per minute: KumoMTA's default max_message_rate 100/s
MAX_CACHED_DOMAINS = 10_000  # route cache entries; the least recently used go first
ERROR_TTL = 5.0  # seconds a routing failure is remembered (a burst to a dead domain: one query)

_T = TypeVar("_T")
_PSL = PublicSuffixList()  # bundled with the package: no network access at run time


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """A named group of MX hosts and its limits; None inherits the defaults."""

    name: str
    mx_suffixes: tuple[str, ...] = ()  # ".google.com" matches "aspmx.l.google.com"
    connections: int | None = None
    messages_per_connection: int | None = None
    messages_per_minute: float | None = None


def _rule(name: str, suffixes: tuple[str, ...], connections: int | None = None,
          per_connection: int | None = None) -> ProviderRule:
    return ProviderRule(name, suffixes, connections, per_connection, DEFAULT_PROVIDER_RATE)


BUILTIN_PROVIDERS: tuple[ProviderRule, ...] = (
    _rule("google", (".google.com", ".googlemail.com"), 5, 50),  # Gmail and Google Workspace
    _rule("yahoo", (".yahoodns.net",), None, 20),  # Yahoo, AOL, Verizon
    _rule("outlook", (".olc.protection.outlook.com", ".outlook.com", ".hotmail.com"), 5, 50),
    _rule("office365", (".mail.protection.outlook.com", ".mx.microsoft"), 5, 50),
    _rule("apple", (".icloud.com",), 10, 5),  # icloud.com, me.com, mac.com
    _rule("gmx", (".gmx.net", ".gmx.com", ".web.de"), 4, 20),  # GMX, web.de (United Internet)
    _rule("mailru", (".mail.ru",)),
    _rule("yandex", (".yandex.ru", ".yandex.net")),
    _rule("comcast", (".comcast.net",), 25, 1000),
    _rule("orange", (".orange.fr",), 3, None),
    _rule("qq", (".qq.com",), 4, 8),
    _rule("netease", (".netease.com",), 4, 7),  # 163.com, 126.com
)


def merge_rules(builtin: Iterable[ProviderRule],
                overrides: Iterable[ProviderRule]) -> tuple[ProviderRule, ...]:
    """The built-in rules with `overrides` applied: an override of a known name replaces the
    values it sets (and its suffixes, when it lists any); an unknown name is a new rule."""
    rules = {rule.name: rule for rule in builtin}
    for override in overrides:
        base = rules.get(override.name)
        if base is None:
            rules[override.name] = override
            continue
        rules[override.name] = ProviderRule(
            override.name, override.mx_suffixes or base.mx_suffixes,
            _pick(override.connections, base.connections),
            _pick(override.messages_per_connection, base.messages_per_connection),
            _pick(override.messages_per_minute, base.messages_per_minute))
    return tuple(rules.values())


def share_rule(rule: ProviderRule, processes: int) -> ProviderRule:
    """A process's share of a node-wide rule: connections divided (at least one), rate divided;
    messages per connection are per connection and stay."""
    if processes <= 1:
        return rule
    return replace(
        rule,
        connections=None if rule.connections is None else max(1, rule.connections // processes),
        messages_per_minute=None if rule.messages_per_minute is None
        else rule.messages_per_minute / processes)


def _pick(first: _T | None, second: _T | None) -> _T | None:
    return first if first is not None else second


def registered_domain(host: str) -> str:
    """"mx1.example.co.uk" -> "example.co.uk"; a name without a registered part as it is."""
    name = host.strip().rstrip(".").lower()
    if name.startswith("["):
        return name
    return _PSL.privatesuffix(name) or name


class ProviderTable:
    """Names groups and gives their limits: a rule's values, else `defaults`."""

    def __init__(self, rules: Iterable[ProviderRule], defaults: GroupLimits) -> None:
        self.defaults = defaults
        self._rules = {rule.name: rule for rule in rules}
        # Longest suffix first, so ".mail.protection.outlook.com" beats ".outlook.com".
        self._suffixes = sorted(((s.lower() if s.startswith(".") else "." + s.lower(), rule.name)
                                 for rule in self._rules.values() for s in rule.mx_suffixes),
                                key=lambda pair: -len(pair[0]))

    def group_of_host(self, mx_host: str) -> str:
        host = mx_host.strip().rstrip(".").lower()
        for suffix, name in self._suffixes:
            if host.endswith(suffix) or host == suffix[1:]:
                return name
        return registered_domain(host)

    def group_of(self, routes: Sequence[Route]) -> str:
        """The group of a destination: that of its most preferred MX host."""
        return self.group_of_host(routes[0].mx_host)

    def limits(self, group: str) -> GroupLimits:
        rule = self._rules.get(group)
        if rule is None:
            return self.defaults
        d = self.defaults
        return GroupLimits(
            connections=rule.connections if rule.connections is not None else d.connections,
            messages_per_connection=rule.messages_per_connection
            if rule.messages_per_connection is not None else d.messages_per_connection,
            messages_per_minute=rule.messages_per_minute
            if rule.messages_per_minute is not None else d.messages_per_minute)


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    routes: tuple[Route, ...] = ()
    error: RoutingError | None = None


class RouteCache:
    """`Router.route` with answers kept `ttl` seconds (failures `ERROR_TTL`) and concurrent
    look-ups of one domain shared. MX records rarely live less than minutes (RFC 1035 TTLs of
    providers are 300 s and more), so a short cache only saves queries."""

    def __init__(self, router: Router, *, ttl: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.ttl = ttl
        self._now = monotonic
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        self._pending: dict[str, asyncio.Future[tuple[Route, ...]]] = {}
        self.lookups = 0  # router calls made (tests check the cache saves them)

    async def route(self, domain: str) -> tuple[Route, ...]:
        key = domain.strip().rstrip(".").lower()
        hit = self._entries.get(key)
        if hit is not None and hit.expires > self._now():
            self._entries.move_to_end(key)
            if hit.error is not None:
                raise _copy(hit.error)
            return hit.routes
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda f: self._done(key, f))
        return await asyncio.shield(pending)

    def _done(self, key: str, future: asyncio.Future[tuple[Route, ...]]) -> None:
        self._pending.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved: every waiter may have gone

    async def _lookup(self, key: str) -> tuple[Route, ...]:
        self.lookups += 1
        try:
            routes = await self.router.route(key)
        except RoutingError as exc:
            self._store(key, _Cached(self._now() + min(self.ttl, ERROR_TTL), error=exc))
            raise
        self._store(key, _Cached(self._now() + self.ttl, routes))
        return routes

    def _store(self, key: str, entry: _Cached) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_CACHED_DOMAINS:
            self._entries.popitem(last=False)


def _copy(error: RoutingError) -> RoutingError:
    """A fresh exception per raise: re-raising one instance would grow its traceback."""
    return RoutingError(error.domain, error.reason, transient=error.transient,
                        enhanced=error.smtp_enhanced, code=error.smtp_code)


__all__ = [
    "BUILTIN_PROVIDERS",
    "DEFAULT_PROVIDER_RATE",
    "ProviderRule",
    "ProviderTable",
    "RouteCache",
    "merge_rules",
    "registered_domain",
    "share_rule",
]
