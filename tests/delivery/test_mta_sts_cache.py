"""MtaStsPolicies' cache decisions (RFC 8461 3.1, 3.3, 5.1) with an injected clock, against real
parts: the loopback DNS server, an HTTPS policy host with a trustme certificate, SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from mailprime.adapters.mta_sts import HttpsPolicyFetcher
from mailprime.delivery.mta_sts import POLICY_PATH, MtaStsPolicies, StsMode
from mailprime.delivery.tls_reports import TlsReports
from mailprime.domain.deliverability import TlsResultKey
from mailprime.net.dns import DnsResolver
from mailprime.net.https_fetch import HttpsFetcher
from mailprime.net.tls import client_context
from mailprime.storage.sql import open_store
from mailprime.storage.sql.store import SqlStore
from tests.support.dns_server import DnsTestServer
from tests.support.https_server import HttpsTestServer, https_server

DOMAIN = "example.test"
TXT_NAME = f"_mta-sts.{DOMAIN}"
ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"
TESTING = "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 86400\n"
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class World:
    dns: DnsTestServer
    https: HttpsTestServer
    store: SqlStore
    clock: ManualClock
    reports: TlsReports
    make: Callable[..., MtaStsPolicies]

    def publish(self, policy_id: str | None) -> None:
        self.dns.zone.remove(TXT_NAME, "TXT")
        if policy_id is not None:
            # TTL 0: never cached by the resolver, so each look-up reaches the server.
            self.dns.zone.add_txt(TXT_NAME, f"v=STSv1; id={policy_id};", ttl=0)

    def fetches(self) -> int:
        return sum(1 for _host, path in self.https.requests if path == POLICY_PATH)

    def txt_queries(self) -> int:
        return sum(1 for q in self.dns.queries if q.name == TXT_NAME and q.qtype == "TXT")

    def failures(self) -> dict[str, int]:
        return {k.result_type: n for counts in self.reports.pending().values()
                for k, n in counts.items()}


@asynccontextmanager
async def world(tmp: Path, ca: trustme.CA, dns: DnsTestServer) -> AsyncIterator[World]:
    dns.zone.add_a(f"mta-sts.{DOMAIN}", "127.0.0.1")
    store = await open_store(f"sqlite:///{tmp / 'db.sqlite'}", spool_dir=tmp / "spool",
                             inline_max=65536)
    clock = ManualClock(T0)
    reports = TlsReports(store, clock)
    try:
        async with https_server(ca, f"mta-sts.{DOMAIN}") as https:
            ctx = client_context(verify=True)
            ca.configure_trust(ctx)
            resolver = DnsResolver([dns.address], timeout=2.0)
            fetcher = HttpsPolicyFetcher(HttpsFetcher(resolver, ctx, port=https.port, timeout=5.0))

            def make(**kwargs: object) -> MtaStsPolicies:
                return MtaStsPolicies(resolver, fetcher, store, clock, reports=reports,
                                      **kwargs)  # type: ignore[arg-type]
            yield World(dns, https, store, clock, reports, make)
    finally:
        await store.close()


def run(tmp: Path, ca: trustme.CA, dns: DnsTestServer,
        body: Callable[[World], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with world(tmp, ca, dns) as w:
            await body(w)
    asyncio.run(scenario())


def test_no_txt_record_means_no_policy_and_no_fetch(tmp_path: Path, ca: trustme.CA,
                                                    dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.https.serve_text(POLICY_PATH, ENFORCE)
        assert await w.make().policy(DOMAIN) is None
        assert w.fetches() == 0 and w.failures() == {}
    run(tmp_path, ca, dns_server, body)


def test_policy_is_fetched_stored_and_reused(tmp_path: Path, ca: trustme.CA,
                                             dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        policies = w.make(recheck_seconds=300)
        policy = await policies.policy(DOMAIN)
        assert policy is not None and policy.mode is StsMode.ENFORCE
        assert policy.mx == ("mx.example.test",)
        record = await w.store.get_mta_sts_policy(DOMAIN)
        assert record is not None
        assert (record.policy_id, record.policy_text, record.fetched_at, record.expires_at) == (
            "1", ENFORCE, T0, T0 + timedelta(seconds=86400))
        assert w.https.requests[0][0] == f"mta-sts.{DOMAIN}:{w.https.port}"

        # Within recheck_seconds: neither DNS nor HTTPS is asked again.
        w.clock.advance(299)
        assert await policies.policy(DOMAIN) == policy
        assert (w.txt_queries(), w.fetches()) == (1, 1)
        # Later the TXT id is asked again; the same id means no fetch (RFC 8461 3.1).
        w.clock.advance(2)
        assert await policies.policy(DOMAIN) == policy
        assert (w.txt_queries(), w.fetches()) == (2, 1)
    run(tmp_path, ca, dns_server, body)


def test_new_txt_id_fetches_the_new_policy(tmp_path: Path, ca: trustme.CA,
                                           dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        policies = w.make(recheck_seconds=0)
        assert (await policies.policy(DOMAIN)).mode is StsMode.ENFORCE  # type: ignore[union-attr]
        w.publish("2")
        w.https.serve_text(POLICY_PATH, TESTING)
        w.clock.advance(1)
        policy = await policies.policy(DOMAIN)
        assert policy is not None and policy.mode is StsMode.TESTING and w.fetches() == 2
        record = await w.store.get_mta_sts_policy(DOMAIN)
        assert record is not None and record.policy_id == "2"
    run(tmp_path, ca, dns_server, body)


def test_failed_fetch_keeps_the_cached_policy(tmp_path: Path, ca: trustme.CA,
                                              dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        assert await w.make().policy(DOMAIN) is not None
        await w.https.stop()  # the policy host goes down
        w.publish("2")  # ... while a new id is announced

        # A new process (nothing in memory): the stored, unexpired policy applies (RFC 8461 5.1).
        w.clock.advance(3600)
        policies = w.make(recheck_seconds=0, retry_seconds=600)
        policy = await policies.policy(DOMAIN)
        assert policy is not None and policy.mode is StsMode.ENFORCE
        assert w.failures() == {"sts-policy-fetch-error": 1}
        # The failed fetch is not retried before retry_seconds.
        w.clock.advance(599)
        assert await policies.policy(DOMAIN) == policy
        assert w.failures() == {"sts-policy-fetch-error": 1}
        w.clock.advance(2)
        assert await policies.policy(DOMAIN) == policy
        assert w.failures() == {"sts-policy-fetch-error": 2}
        # Once expired, with still no fetch, the domain has no policy (RFC 8461 3.3).
        w.clock.advance(86400)
        assert await policies.policy(DOMAIN) is None
    run(tmp_path, ca, dns_server, body)


def test_cached_policy_applies_when_the_txt_record_goes(tmp_path: Path, ca: trustme.CA,
                                                        dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        assert await w.make().policy(DOMAIN) is not None
        w.publish(None)  # an attacker strips the TXT record, or it was removed
        w.clock.advance(600)
        assert (await w.make(recheck_seconds=0).policy(DOMAIN)) is not None
        assert w.fetches() == 1
    run(tmp_path, ca, dns_server, body)


def test_invalid_policy_counts_and_means_no_policy(tmp_path: Path, ca: trustme.CA,
                                                   dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, "version: STSv1\nmode: enforce\nmax_age: 60\n")
        assert await w.make().policy(DOMAIN) is None
        assert w.failures() == {"sts-policy-invalid": 1}
        assert await w.store.get_mta_sts_policy(DOMAIN) is None
    run(tmp_path, ca, dns_server, body)


def test_policy_host_with_a_bad_certificate_is_webpki_invalid(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        dns_server.zone.add_a("mta-sts.other.test", "127.0.0.1")
        dns_server.zone.add_txt("_mta-sts.other.test", "v=STSv1; id=9;", ttl=0)
        assert await w.make().policy("other.test") is None
        assert w.failures() == {"sts-webpki-invalid": 1}
    run(tmp_path, ca, dns_server, body)


def test_proactive_refresh_past_half_life(tmp_path: Path, ca: trustme.CA,
                                          dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        policies = w.make(recheck_seconds=0)
        await policies.policy(DOMAIN)
        w.clock.advance(43199)
        await policies.policy(DOMAIN)
        assert w.fetches() == 1
        w.clock.advance(2)  # past half of max_age 86400, same id: fetched again, expiry extended
        await policies.policy(DOMAIN)
        assert w.fetches() == 2
        record = await w.store.get_mta_sts_policy(DOMAIN)
        assert record is not None and record.expires_at == w.clock.now() + timedelta(days=1)
    run(tmp_path, ca, dns_server, body)


def test_concurrent_lookups_share_one_fetch(tmp_path: Path, ca: trustme.CA,
                                            dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        policies = w.make()
        results = await asyncio.gather(*(policies.policy(DOMAIN) for _ in range(10)))
        assert len(set(results)) == 1 and results[0] is not None
        assert (w.txt_queries(), w.fetches()) == (1, 1)
    run(tmp_path, ca, dns_server, body)


class CrashingFetcher:
    """A PolicyFetcher (the port) that fails with something other than PolicyFetchError, as
    a bug provoked by a hostile policy host would; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, domain: str) -> str:
        self.calls += 1
        raise ValueError("readexactly size can not be less than zero")


def test_a_malformed_chunk_size_is_a_fetch_error_not_a_crash(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_raw(POLICY_PATH, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n")
        policies = w.make(recheck_seconds=0, retry_seconds=600)
        assert await policies.policy(DOMAIN) is None
        assert w.failures() == {"sts-policy-fetch-error": 1}
        w.clock.advance(1)  # not fetched again before retry_seconds: deliveries do not refetch
        assert await policies.policy(DOMAIN) is None
        assert w.fetches() == 1
    run(tmp_path, ca, dns_server, body)


def test_any_exception_from_the_fetcher_is_a_logged_fetch_error(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer,
        caplog: pytest.LogCaptureFixture) -> None:
    async def body(w: World) -> None:
        w.publish("1")
        w.https.serve_text(POLICY_PATH, ENFORCE)
        assert await w.make().policy(DOMAIN) is not None  # a policy cached and stored
        w.publish("2")
        fetcher = CrashingFetcher()
        policies = MtaStsPolicies(DnsResolver([w.dns.address], timeout=2.0), fetcher, w.store,
                                  w.clock, reports=w.reports, recheck_seconds=0,
                                  retry_seconds=600)
        w.clock.advance(10)
        policy = await policies.policy(DOMAIN)  # the stored policy still applies (RFC 8461 5.1)
        assert policy is not None and policy.mode is StsMode.ENFORCE
        assert fetcher.calls == 1 and w.failures() == {"sts-policy-fetch-error": 1}
        assert "mta-sts: example.test: policy fetch failed" in caplog.text
        assert "ValueError" in caplog.text
        w.clock.advance(1)
        assert await policies.policy(DOMAIN) == policy
        assert fetcher.calls == 1  # held back for retry_seconds
    run(tmp_path, ca, dns_server, body)


def test_retry_hold_offs_are_bounded(tmp_path: Path, ca: trustme.CA,
                                     dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        names = [f"d{n}.test" for n in range(6)]
        for name in names:
            dns_server.zone.add_txt(f"_mta-sts.{name}", "v=STSv1; id=1;", ttl=0)
        fetcher = CrashingFetcher()
        policies = MtaStsPolicies(DnsResolver([w.dns.address], timeout=2.0), fetcher, w.store,
                                  w.clock, recheck_seconds=0, retry_seconds=60, max_entries=3)
        for name in names:
            assert await policies.policy(name) is None
            assert policies.holding_back <= 3
        assert fetcher.calls == 6
        # The oldest hold-offs made room: d0 is fetched again at once, d5 is still held back.
        assert await policies.policy("d0.test") is None and fetcher.calls == 7
        assert await policies.policy("d5.test") is None and fetcher.calls == 7
        # Expired hold-offs are pruned first.
        w.clock.advance(61)
        assert await policies.policy("d1.test") is None and fetcher.calls == 8
        assert policies.holding_back == 1
    run(tmp_path, ca, dns_server, body)


def test_reports_flush_to_the_store(tmp_path: Path, ca: trustme.CA,
                                    dns_server: DnsTestServer) -> None:
    async def body(w: World) -> None:
        w.reports.record(DOMAIN, "sts")
        w.reports.record(DOMAIN, "sts")
        w.reports.record(DOMAIN, "sts", "certificate-expired", "MX.example.test")
        await w.reports.flush()
        w.reports.record(DOMAIN, "sts")
        w.clock.advance(86400)  # the next UTC day
        w.reports.record(DOMAIN, "sts")
        await w.reports.close()
        assert w.reports.pending() == {}
        assert set(await w.store.tls_results(T0.date())) == {
            (TlsResultKey(DOMAIN, "sts", ""), 3),
            (TlsResultKey(DOMAIN, "sts", "certificate-expired", "mx.example.test"), 1)}
        assert await w.store.tls_results(T0.date() + timedelta(days=1)) == [
            (TlsResultKey(DOMAIN, "sts", ""), 1)]
    run(tmp_path, ca, dns_server, body)
