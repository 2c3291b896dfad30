"""MTA-STS (RFC 8461) on delivery: discover, fetch, cache and apply a recipient domain's policy.

Theory of operation. Plain SMTP falls back to plaintext, or to any certificate, whenever STARTTLS
is stripped or a certificate is wrong, so an attacker on the path can read or redirect mail.
MTA-STS lets a domain say "only these MX hosts, only with a valid certificate", published over
HTTPS (authenticated by the WebPKI) and announced by a TXT record whose id changes with the
policy. Three parts:

* Pure parsing (no I/O): the `_mta-sts` TXT record (3.1), the policy file (3.2) and MX patterns
  (4.1: "*.example.com" matches exactly one extra leftmost label).
* `MtaStsPolicies`: the cache and its decisions, per domain. The TXT record is asked (the
  resolver's own cache keeps that cheap) at most every `recheck_seconds`; a policy is fetched
  only when the TXT id differs from the cached policy's id (3.1), or, optionally, once the cached
  one is past half its max_age (a proactive refresh, so a live policy never lapses). A policy
  fetched is stored (MtaStsStore) with expiry fetched_at + max_age and applies until then. When
  nothing newer can be had — no TXT, a broken TXT, a failed fetch, an invalid policy — an
  unexpired cached policy still applies (3.3 and 5.1: "MUST apply that cached policy"); without
  one the domain is treated as having no policy (3.3). A failed fetch is not retried for
  `retry_seconds` (5.1 suggests rate-limiting), and concurrent deliveries to one domain share
  one look-up. Fetch failures are counted for TLS reports (RFC 8460 4.3.2.2). The policy host
  is anyone's server, so *any* exception out of the fetcher (a PolicyFetchError or a bug it
  provoked) is a fetch failure, logged: `policy()` never raises, and a hostile host cannot make
  every delivery to its domain crash and refetch. Both maps are bounded: the policies by
  `max_entries` (least recently used out), the retry hold-offs by the same number (expired
  ones pruned first, then the oldest).
* Application: `MtaStsRouter` (a Router) marks each route with an `StsTls` requirement: in
  "enforce" mode only MX hosts matching the policy are kept and each must use STARTTLS with a
  certificate valid for the MX name (4.2); if no MX matches, the recipients are deferred
  (4.7.5, transient: 5.1 step 3 forbids failing permanently before a newer policy was looked
  for). In "testing" mode every route is kept and tried with verification; a failure is
  counted and the message goes anyway over opportunistic TLS (5). `StsDialer` wraps the Dialer
  to carry that out and to count each session's result per policy domain (RFC 8460).

`StsTls` is a `TlsRequirement` that also names the policy domain, so the transport needs no
knowledge of MTA-STS: it passes `route.tls` to `dialer.connect`, and only `StsDialer` reads the
extra fields; the Dialer below it sees None (opportunistic) or a plain requirement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mailprime.delivery.router import IpPreference, Route, Router, RoutingError, RoutingLimits
from mailprime.delivery.tls_reports import (
    POLICY_NONE,
    POLICY_STS,
    STARTTLS_NOT_SUPPORTED,
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    SUCCESS,
    VALIDATION_FAILURE,
    TlsFailure,
    TlsReports,
)
from mailprime.delivery.transport import Dialer, OutboundConnection, TlsRequirement
from mailprime.domain.clock import Clock
from mailprime.domain.deliverability import MtaStsPolicyRecord
from mailprime.message.mta_sts_policy import (
    FETCH_TIMEOUT,
    MAX_AGE_LIMIT,
    MAX_POLICY_SIZE,
    POLICY_PATH,
    PolicyError,
    StsMode,
    StsPolicy,
    mx_pattern_matches,
    parse_policy,
    parse_txt_records,
)
from mailprime.message.resolver import DnsError, Resolver
from mailprime.storage.ports import MtaStsStore

log = logging.getLogger("mailprime.delivery.mta_sts")

# Fetching and caching -------------------------------------------------------------------------

class PolicyFetchError(Exception):
    """The policy could not be fetched; `result_type` is its RFC 8460 4.3.2.2 type:
    sts-policy-fetch-error, or sts-webpki-invalid when the HTTPS certificate did not verify."""

    def __init__(self, reason: str, result_type: str = STS_POLICY_FETCH_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_type = result_type


class PolicyFetcher(Protocol):
    async def fetch(self, domain: str) -> str:
        """GETs https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.3: verified
        certificate, no redirects, a timeout, text/plain) and returns the body as text.
        Raises PolicyFetchError."""
        ...


@dataclass(frozen=True, slots=True)
class _Known:
    """What the cache knows of one domain: the policy in force (None: no policy) and when the
    TXT record was last asked."""

    policy: StsPolicy | None
    record: MtaStsPolicyRecord | None
    checked_at: datetime


class MtaStsPolicies:
    """Per-domain MTA-STS policy look-up with the RFC 8461 cache rules (see the module doc)."""

    def __init__(self, resolver: Resolver, fetcher: PolicyFetcher, store: MtaStsStore,
                 clock: Clock, *, reports: TlsReports | None = None,
                 recheck_seconds: float = 300.0, retry_seconds: float = 300.0,
                 proactive_refresh: bool = True, max_entries: int = 10_000) -> None:
        self._resolver = resolver
        self._fetcher = fetcher
        self._store = store
        self._clock = clock
        self._reports = reports
        self._recheck = timedelta(seconds=recheck_seconds)
        self._retry = timedelta(seconds=retry_seconds)
        self._proactive = proactive_refresh
        self._max_entries = max_entries
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._retry_after: dict[str, datetime] = {}
        self._inflight: dict[str, asyncio.Task[_Known]] = {}

    @property
    def holding_back(self) -> int:
        """Domains whose next fetch is held back after a failure (metrics, tests)."""
        return len(self._retry_after)

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy in force for `domain` now, or None. Never raises for DNS, HTTPS or
        storage trouble: those degrade to the cached policy or to none, as RFC 8461 3.3 says."""
        name = domain.strip().rstrip(".").lower()
        now = self._clock.now()
        known = self._known.get(name)
        if known is not None and now - known.checked_at < self._recheck and _alive(known, now):
            self._known.move_to_end(name)
            return known.policy
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(name, now, known))
            self._inflight[name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(name, None))
        # Shielded: one delivery being cancelled must not cancel the look-up others wait for.
        try:
            known = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug below: the delivery goes on as RFC 8461 3.3 says
            log.exception("mta-sts: %s: policy look-up failed", name)
            cached = self._known.get(name)
            return cached.policy if cached is not None and _alive(cached, now) else None
        return known.policy

    async def _refresh(self, domain: str, now: datetime, known: _Known | None) -> _Known:
        policy_id = await self._txt_id(domain)
        cached = await self._cached(domain, now, known)
        policy, record = cached if cached is not None else (None, None)
        wanted = policy_id is not None and (record is None or record.policy_id != policy_id
                                            or self._stale(record, now))
        if wanted and policy_id is not None and now >= self._retry_after.get(domain, now):
            fetched = await self._fetch(domain, policy_id, now)
            if fetched is not None:
                policy, record = fetched
                self._retry_after.pop(domain, None)
            else:
                self._hold_back(domain, now)
        result = _Known(policy, record, now)
        self._known[domain] = result
        self._known.move_to_end(domain)
        while len(self._known) > self._max_entries:
            self._known.popitem(last=False)
        return result

    def _hold_back(self, domain: str, now: datetime) -> None:
        """No fetch for `domain` before retry_seconds; the map stays within max_entries."""
        self._retry_after.pop(domain, None)  # re-inserted last: the dict is oldest first
        if len(self._retry_after) >= self._max_entries:
            for name in [n for n, until in self._retry_after.items() if until <= now]:
                del self._retry_after[name]
            while len(self._retry_after) >= self._max_entries:
                del self._retry_after[next(iter(self._retry_after))]
        self._retry_after[domain] = now + self._retry

    def _stale(self, record: MtaStsPolicyRecord, now: datetime) -> bool:
        """Past half its lifetime: refetched (same id) so that a live policy never lapses."""
        fetched, expires = _aware(record.fetched_at), _aware(record.expires_at)
        return self._proactive and now >= fetched + (expires - fetched) / 2

    async def _txt_id(self, domain: str) -> str | None:
        try:
            records = await self._resolver.txt(f"_mta-sts.{domain}")
        except DnsError:
            return None  # absent or unknown for now: the cache (if any) decides (3.3)
        except Exception:  # a resolver bug: the same, logged
            log.exception("mta-sts: %s: _mta-sts TXT look-up failed", domain)
            return None
        try:
            return parse_txt_records([r.text for r in records])
        except PolicyError as exc:
            log.info("mta-sts: %s: ignoring _mta-sts TXT: %s", domain, exc)
            return None

    async def _cached(self, domain: str, now: datetime,
                      known: _Known | None) -> tuple[StsPolicy, MtaStsPolicyRecord] | None:
        record = known.record if known is not None else None
        if record is None:
            try:
                record = await self._store.get_mta_sts_policy(domain)
            except Exception:  # a storage failure must not stop delivery; log it and go on
                log.exception("mta-sts: %s: reading the cached policy failed", domain)
                return None
        if record is None or now >= _aware(record.expires_at):
            return None
        try:
            return parse_policy(record.policy_text), record
        except PolicyError:
            return None

    async def _fetch(self, domain: str, policy_id: str,
                     now: datetime) -> tuple[StsPolicy, MtaStsPolicyRecord] | None:
        try:
            text = await self._fetcher.fetch(domain)
        except PolicyFetchError as exc:
            log.info("mta-sts: %s: policy fetch failed: %s", domain, exc.reason)
            self._report(domain, exc.result_type)
            return None
        except Exception:  # whatever the policy host provoked: a fetch error all the same
            log.exception("mta-sts: %s: policy fetch failed", domain)
            self._report(domain, STS_POLICY_FETCH_ERROR)
            return None
        try:
            policy = parse_policy(text)
        except PolicyError as exc:
            log.info("mta-sts: %s: invalid policy: %s", domain, exc)
            self._report(domain, STS_POLICY_INVALID)
            return None
        record = MtaStsPolicyRecord(domain=domain, policy_id=policy_id, policy_text=text,
                                    fetched_at=now,
                                    expires_at=now + timedelta(seconds=policy.max_age))
        try:
            await self._store.save_mta_sts_policy(record)
        except Exception:  # the policy applies from memory; the next process fetches it again
            log.exception("mta-sts: %s: storing the policy failed", domain)
        log.info("mta-sts: %s: policy id=%s mode=%s max_age=%d mx=%s", domain, policy_id,
                 policy.mode, policy.max_age, ",".join(policy.mx))
        return policy, record

    def _report(self, domain: str, result_type: str) -> None:
        if self._reports is not None:
            self._reports.record(domain, POLICY_STS, result_type)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _alive(known: _Known, now: datetime) -> bool:
    return known.record is None or now < _aware(known.record.expires_at)


# Application on delivery --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StsTls(TlsRequirement):
    """A route's TLS requirement with what MTA-STS and TLS reporting need. `enforce`: a failure
    skips the route (mode enforce); otherwise it is counted and the route is used anyway, with
    verification attempted when `verify` (mode testing) or plain opportunistic TLS (no policy)."""

    policy_domain: str = ""
    policy_type: str = POLICY_STS


class MtaStsRouter(Router):
    """A Router whose routes carry each domain's MTA-STS requirement (see the module doc)."""

    def __init__(self, resolver: Resolver, policies: MtaStsPolicies, *,
                 reports: TlsReports | None = None, limits: RoutingLimits | None = None,
                 ip_preference: IpPreference = IpPreference.IPV4_FIRST) -> None:
        super().__init__(resolver, limits=limits, ip_preference=ip_preference)
        self._policies = policies
        self._reports = reports

    async def route(self, domain: str) -> tuple[Route, ...]:
        routes = await super().route(domain)
        name = domain.strip().rstrip(".").lower()
        if name.startswith("["):
            return routes  # an address literal has no policy domain
        policy = await self._policies.policy(name)
        if policy is None or policy.mode is StsMode.NONE:
            if self._reports is None:
                return routes
            tls = StsTls(verify=False, policy_domain=name, policy_type=POLICY_NONE, enforce=False)
            return tuple(replace(r, tls=tls) for r in routes)
        enforce = policy.mode is StsMode.ENFORCE
        matching = StsTls(verify=True, policy_domain=name, enforce=enforce)
        out: list[Route] = []
        refused: list[str] = []
        for route in routes:
            if policy.matches(route.mx_host):
                out.append(replace(route, tls=matching))
            else:
                if route.mx_host not in refused:
                    refused.append(route.mx_host)
                if not enforce:  # testing: delivered anyway, over opportunistic TLS (the
                    out.append(route)  # failure is counted below, once per host)
        for host in refused:
            log.info("mta-sts: %s: MX %s does not match the policy (%s mode)", name, host,
                     policy.mode)
            if self._reports is not None:
                self._reports.record(name, POLICY_STS, VALIDATION_FAILURE, host)
        if not out:
            raise RoutingError(name, f"no MX host of {name} matches its MTA-STS policy "
                                     f"(mx: {', '.join(policy.mx)}; RFC 8461 4.1)",
                               transient=True, enhanced="4.7.5", code=451)
        return tuple(out)


class StsDialer:
    """A Dialer that carries out `StsTls` requirements and counts each session's TLS result."""

    def __init__(self, inner: Dialer, reports: TlsReports | None = None) -> None:
        self._inner = inner
        self._reports = reports

    async def connect(self, ip: str, port: int, *, server_name: str, source_ip: str | None = None,
                      tls: TlsRequirement | None = None) -> OutboundConnection:
        if not isinstance(tls, StsTls):
            return await self._inner.connect(ip, port, server_name=server_name,
                                             source_ip=source_ip, tls=tls)
        if tls.verify:
            try:
                conn = await self._inner.connect(ip, port, server_name=server_name,
                                                 source_ip=source_ip,
                                                 tls=TlsRequirement(True, tls.source))
            except TlsFailure as exc:
                self._record(tls, exc.result_type, server_name)
                if tls.enforce:
                    raise
                log.info("mta-sts: %s: %s failed TLS validation (testing mode, delivering "
                         "anyway): %s", tls.policy_domain, server_name, exc.reason)
            else:
                self._record(tls, SUCCESS, server_name)
                return conn
        conn = await self._inner.connect(ip, port, server_name=server_name, source_ip=source_ip)
        if not tls.verify:
            self._record(tls, SUCCESS if conn.tls_active else STARTTLS_NOT_SUPPORTED, server_name)
        return conn

    def _record(self, tls: StsTls, result_type: str, mx: str) -> None:
        if self._reports is not None:
            self._reports.record(tls.policy_domain, tls.policy_type, result_type,
                                 "" if result_type == SUCCESS else mx)


__all__ = [
    "FETCH_TIMEOUT",
    "MAX_AGE_LIMIT",
    "MAX_POLICY_SIZE",
    "POLICY_PATH",
    "MtaStsPolicies",
    "MtaStsRouter",
    "PolicyError",
    "PolicyFetchError",
    "PolicyFetcher",
    "StsDialer",
    "StsMode",
    "StsPolicy",
    "StsTls",
    "mx_pattern_matches",
    "parse_policy",
    "parse_txt_records",
]
