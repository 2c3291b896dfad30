"""What the web app is built from: handed in by the composition root (runtime), never global."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailprime.config import Settings
from mailprime.domain.clock import Clock
from mailprime.marketing.preflight import SpamScorer
from mailprime.marketing.tokens import TokenSigner
from mailprime.storage.ports import Store


@dataclass(slots=True)
class WebDeps:
    store: Store
    settings: Settings
    clock: Clock
    signer: TokenSigner
    machine_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    spam: SpamScorer | None = None  # the campaign pre-flight's spam score (rspamd), if set up

    @classmethod
    def build(cls, store: Store, settings: Settings, clock: Clock, signer: TokenSigner, *,
              spam: SpamScorer | None = None) -> WebDeps:
        networks = tuple(ipaddress.ip_network(cidr, strict=False)
                         for cidr in settings.http.machine_networks)
        return cls(store, settings, clock, signer, networks, spam)


__all__ = ["WebDeps"]
