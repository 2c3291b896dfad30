"""MTA-STS wiring: satisfies delivery.mta_sts.PolicyFetcher with net.https_fetch (the policy of
<domain> is at https://mta-sts.<domain>/.well-known/mta-sts.txt, RFC 8461 3.2, served as
text/plain), and builds the router and dialer that apply policies, from [mta_sts] settings."""

from __future__ import annotations

from mailprime.config import Settings
from mailprime.delivery.mta_sts import (
    POLICY_PATH,
    MtaStsPolicies,
    MtaStsRouter,
    PolicyFetchError,
    StsDialer,
)
from mailprime.delivery.router import Router
from mailprime.delivery.tls_reports import (
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
    TlsReports,
)
from mailprime.delivery.transport import Dialer
from mailprime.domain.clock import Clock
from mailprime.message.resolver import Resolver
from mailprime.net.https_fetch import HttpsFetcher, HttpsFetchError
from mailprime.net.tls import client_context
from mailprime.storage.ports import MtaStsStore


class HttpsPolicyFetcher:
    def __init__(self, fetcher: HttpsFetcher) -> None:
        self._fetcher = fetcher

    async def fetch(self, domain: str) -> str:
        try:
            body = await self._fetcher.get(f"mta-sts.{domain}", POLICY_PATH,
                                           content_type="text/plain")
        except HttpsFetchError as exc:
            raise PolicyFetchError(exc.reason, STS_WEBPKI_INVALID if exc.tls
                                   else STS_POLICY_FETCH_ERROR) from exc
        try:
            return body.decode("utf-8")  # RFC 8461 3.2: the policy is UTF-8 text
        except UnicodeDecodeError as exc:
            raise PolicyFetchError(f"mta-sts.{domain}: policy is not UTF-8: {exc}",
                                   STS_POLICY_INVALID) from exc


def mta_sts_routing(settings: Settings, store: MtaStsStore, resolver: Resolver, *, clock: Clock,
                    dialer: Dialer, reports: TlsReports | None) -> tuple[Router, Dialer]:
    """The router and dialer of the SMTP transport: plain ones when [mta_sts] is off, else
    ones that fetch, cache and enforce policies and count TLS results in `reports`."""
    cfg = settings.mta_sts
    if not cfg.enabled:
        return Router(resolver), dialer
    https = HttpsFetcher(resolver, client_context(verify=True, cafile=cfg.ca_file or None),
                         port=cfg.https_port, timeout=cfg.fetch_timeout,
                         max_size=cfg.max_policy_size,
                         user_agent=f"mailprime ({settings.helo_name})")
    policies = MtaStsPolicies(resolver, HttpsPolicyFetcher(https), store, clock, reports=reports,
                              recheck_seconds=cfg.recheck_seconds,
                              retry_seconds=cfg.retry_seconds)
    return MtaStsRouter(resolver, policies, reports=reports), StsDialer(dialer, reports)
