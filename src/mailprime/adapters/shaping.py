"""Traffic shaping wiring: the delivery.smtp_transport.Shaping of a process, from [shaping].

[shaping] limits, and the built-in provider limits, are what a node may send; each of the
`[server] workers` processes shapes on its own (no shared state but the warm-up counts), so each
takes an equal share: connections divided (at least one each), rates divided. A group without a
connection limit of its own gets `[delivery] per_destination_connections` per process, as
before shaping existed. Warm-up caps are shared through the database and are not divided.
"""

from __future__ import annotations

import os
from datetime import date

from mailprime.config import Settings
from mailprime.delivery.ip_pools import IpPool, PoolSelector, WarmupCounter, WarmupSchedule
from mailprime.delivery.provider_groups import (
    BUILTIN_PROVIDERS,
    ProviderRule,
    ProviderTable,
    merge_rules,
    share_rule,
)
from mailprime.delivery.shaping import AdaptivePolicy, GroupLimits, Shaper
from mailprime.delivery.smtp_transport import Shaping
from mailprime.domain.clock import Clock
from mailprime.domain.mail import Priority
from mailprime.storage.ports import SendingIpStore


def processes(settings: Settings) -> int:
    return settings.server.workers or os.cpu_count() or 1


def build_shaping(settings: Settings, store: SendingIpStore, clock: Clock) -> Shaping:
    cfg = settings.shaping
    share = processes(settings)
    connections = (max(1, cfg.connections // share) if cfg.connections
                   else settings.delivery.per_destination_connections)
    if cfg.enabled:
        defaults = GroupLimits(connections, cfg.messages_per_connection,
                               cfg.messages_per_minute / share)
        overrides = [ProviderRule(name, tuple(p.mx_suffixes), p.connections,
                                  p.messages_per_connection, p.messages_per_minute)
                     for name, p in cfg.providers.items()]
        rules = tuple(share_rule(rule, share) for rule in merge_rules(BUILTIN_PROVIDERS, overrides))
    else:  # connections per MX group only: no provider limits, rates, back-off or warm-up
        defaults = GroupLimits(connections, cfg.messages_per_connection, 0.0)
        rules = ()
    providers = ProviderTable(rules, defaults)
    policy = AdaptivePolicy(
        enabled=cfg.enabled, hold_seconds=cfg.hold_seconds, backoff_seconds=cfg.backoff_seconds,
        backoff_max_seconds=cfg.backoff_max_seconds, recovery_percent=cfg.recovery_percent,
        min_messages_per_minute=cfg.min_messages_per_minute)
    shaper = Shaper(providers.limits, policy)
    if not cfg.pools:
        return Shaping(providers, shaper)
    pools = [IpPool(name, tuple(p.addresses),
                    frozenset(d.lower().rstrip(".") for d in p.sender_domains),
                    frozenset(Priority[c.upper()] for c in p.priorities))
             for name, p in cfg.pools.items()]
    schedules = {address: WarmupSchedule(date.fromisoformat(w.start), tuple(w.caps), w.first,
                                         w.factor, w.days)
                 for address, w in cfg.warmup.items()} if cfg.enabled else {}
    warmup = WarmupCounter(store, schedules, clock, flush_seconds=cfg.usage_flush_seconds)
    return Shaping(providers, shaper, PoolSelector(pools, cfg.default_pool), warmup)


__all__ = ["build_shaping", "processes"]
