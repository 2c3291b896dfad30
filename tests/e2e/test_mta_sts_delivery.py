"""MTA-STS on delivery end to end (RFC 8461, RFC 8460 counts): instance A delivers to B's domain
b.test, whose policy is announced by a _mta-sts TXT record on the loopback DNS server and served
by a real HTTPS server with a trustme certificate for mta-sts.b.test. B's certificate names
mx.b.test (and localhost, 127.0.0.1), so an MX called anything else fails verification.
A trusts the test CA through `[mta_sts] ca_file`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from mailprime.config import MtaStsSettings, Settings
from mailprime.delivery.mta_sts import POLICY_PATH
from mailprime.domain.deliverability import TlsResultKey
from mailprime.domain.mail import EventKind
from mailprime.runtime import start_server
from tests.support.dns_server import DnsTestServer
from tests.support.https_server import HttpsTestServer, https_server
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    provision,
    running_instance,
    simple_message,
    submit,
)

pytestmark = pytest.mark.slow  # starts servers

ALICE = "alice@a.test"
BOB = "bob@b.test"
OUTCOMES = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED, EventKind.DEFERRED)


def policy(mode: str, *mx: str) -> str:
    return "version: STSv1\n" f"mode: {mode}\n" + "".join(f"mx: {m}\n" for m in mx) + \
        "max_age: 86400\n"


@dataclass
class Setup:
    a: Instance
    b: Instance
    https: HttpsTestServer
    dns: DnsTestServer

    async def send(self, subject: str) -> list[EventKind | str]:
        """Submits a message to bob and returns the kind and detail of its first outcome."""
        result = await submit(self.a, ALICE, ALICE, [BOB], simple_message(ALICE, BOB, subject))
        events = await self.a.wait_events(result.queue_id, OUTCOMES)
        return [events[-1].kind, events[-1].detail]

    async def tls_counts(self) -> dict[TlsResultKey, int]:
        reports = self.a.server.tls_reports
        assert reports is not None
        await reports.flush()
        today = datetime.now(UTC).date()
        counts: dict[TlsResultKey, int] = {}
        for day in (today - timedelta(days=1), today):  # a run across midnight
            for key, n in await self.a.server.store.tls_results(day):
                counts[key] = counts.get(key, 0) + n
        return counts


def sts_settings(tmp: Path, ca: trustme.CA, https: HttpsTestServer) -> MtaStsSettings:
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # recheck 0: every delivery asks the TXT record again, so tests see DNS changes at once.
    return MtaStsSettings(ca_file=str(ca_file), https_port=https.port, fetch_timeout=5.0,
                          recheck_seconds=0, report_flush_seconds=60.0)


@asynccontextmanager
async def instance_a(tmp: Path, ca: trustme.CA, dns: DnsTestServer, https: HttpsTestServer,
                     mx_port: int, *, provisioned: bool = False) -> AsyncIterator[Instance]:
    settings: Settings = make_settings(tmp, ca, hostname="mail.a.test",
                                       nameservers=[dns.address], mx_port=mx_port)
    settings.mta_sts = sts_settings(tmp, ca, https)
    if not provisioned:
        await provision(settings, Provisioning("a.test", {ALICE: "alice-secret"}))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, {ALICE: "alice-secret"}, "a.test")
    finally:
        await server.stop(grace=2.0)


@asynccontextmanager
async def setup(tmp: Path, ca: trustme.CA, dns: DnsTestServer, *, mode: str, mx: str,
                policy_mx: tuple[str, ...] | None = None) -> AsyncIterator[Setup]:
    """b.test with one MX `mx` -> 127.0.0.1 (B) and a policy of `mode` for `policy_mx`."""
    dns.zone.add_mx("b.test", 10, mx)
    dns.zone.add_a(mx, "127.0.0.1")
    dns.zone.add_a("mta-sts.b.test", "127.0.0.1")
    dns.zone.add_txt("_mta-sts.b.test", "v=STSv1; id=20261120;", ttl=0)
    async with (
        https_server(ca, "mta-sts.b.test") as https,
        running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                         accounts={BOB: "bob-secret"}) as b,
        instance_a(tmp / "a", ca, dns, https, b.port("mx")) as a,
    ):
        https.serve_text(POLICY_PATH, policy(mode, *(policy_mx or (mx,))))
        yield Setup(a, b, https, dns)


class ConnectionCounter:
    """A TCP listener on another loopback address that counts the connections it gets: an MX
    that must not be used."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()
        await writer.wait_closed()


def test_enforce_with_a_valid_certificate_delivers(tmp_path: Path, ca: trustme.CA,
                                                   dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="mx.b.test") as s:
            kind, detail = await s.send("enforced")
            assert kind is EventKind.DELIVERED, detail
            await s.b.wait_mailbox(BOB, 1)
            assert s.https.requests == [(f"mta-sts.b.test:{s.https.port}", POLICY_PATH)]
            record = await s.a.server.store.get_mta_sts_policy("b.test")
            assert record is not None and record.policy_id == "20261120"
            assert await s.tls_counts() == {TlsResultKey("b.test", "sts", ""): 1}

    asyncio.run(scenario())


def test_enforce_skips_an_mx_outside_the_policy(tmp_path: Path, ca: trustme.CA,
                                                dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        counter = ConnectionCounter()
        # rogue.b.test is the preferred MX, on 127.0.0.2 at B's port: it must never be dialled.
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="mx.b.test") as s:
            rogue = await asyncio.start_server(counter.handle, "127.0.0.2", s.b.port("mx"))
            async with rogue:
                dns_server.zone.add_mx("b.test", 5, "rogue.b.test")
                dns_server.zone.add_a("rogue.b.test", "127.0.0.2")
                kind, detail = await s.send("not via rogue")
                assert kind is EventKind.DELIVERED, detail
                assert counter.connections == 0
            assert await s.tls_counts() == {
                TlsResultKey("b.test", "sts", ""): 1,
                TlsResultKey("b.test", "sts", "validation-failure", "rogue.b.test"): 1}

    asyncio.run(scenario())


def test_enforce_with_a_certificate_for_another_name_defers(tmp_path: Path, ca: trustme.CA,
                                                            dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="wrong.b.test") as s:
            kind, detail = await s.send("bad certificate")
            assert kind is EventKind.DEFERRED
            assert detail.startswith("451 4.4.1 connect to wrong.b.test[127.0.0.1]:")
            assert "certificate verify failed" in detail
            assert await s.b.mailbox(BOB) == []
            assert await s.tls_counts() == {
                TlsResultKey("b.test", "sts", "certificate-host-mismatch", "wrong.b.test"): 1}

    asyncio.run(scenario())


def test_enforce_with_no_matching_mx_defers_4_7_5(tmp_path: Path, ca: trustme.CA,
                                                   dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="mx.b.test",
                         policy_mx=("mx.elsewhere.test",)) as s:
            kind, detail = await s.send("no mx allowed")
            assert kind is EventKind.DEFERRED
            assert detail.startswith("451 4.7.5 no MX host of b.test matches its MTA-STS policy")

    asyncio.run(scenario())


def test_testing_mode_delivers_and_counts_the_failure(tmp_path: Path, ca: trustme.CA,
                                                      dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with setup(tmp_path, ca, dns_server, mode="testing", mx="wrong.b.test") as s:
            kind, detail = await s.send("testing mode")
            assert kind is EventKind.DELIVERED, detail
            await s.b.wait_mailbox(BOB, 1)
            assert await s.tls_counts() == {
                TlsResultKey("b.test", "sts", "certificate-host-mismatch", "wrong.b.test"): 1}

    asyncio.run(scenario())


def test_no_policy_sessions_are_counted(tmp_path: Path, ca: trustme.CA,
                                        dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        async with setup(tmp_path, ca, dns_server, mode="enforce", mx="wrong.b.test") as s:
            dns_server.zone.remove("_mta-sts.b.test")
            kind, detail = await s.send("no policy")
            assert kind is EventKind.DELIVERED, detail  # opportunistic TLS, not verified
            assert s.https.requests == []
            assert await s.tls_counts() == {TlsResultKey("b.test", "no-policy-found", ""): 1}

    asyncio.run(scenario())


def test_stored_policy_applies_when_the_policy_host_is_down(tmp_path: Path, ca: trustme.CA,
                                                            dns_server: DnsTestServer) -> None:
    async def scenario() -> None:
        dns_server.zone.add_mx("b.test", 10, "mx.b.test")
        dns_server.zone.add_a("mx.b.test", "127.0.0.1")
        dns_server.zone.add_a("mta-sts.b.test", "127.0.0.1")
        dns_server.zone.add_txt("_mta-sts.b.test", "v=STSv1; id=20261120;", ttl=0)
        async with (
            https_server(ca, "mta-sts.b.test") as https,
            running_instance(tmp_path / "b", ca, domain="b.test", hostname="mx.b.test",
                             accounts={BOB: "bob-secret"}) as b,
        ):
            https.serve_text(POLICY_PATH, policy("enforce", "mx.b.test"))
            async with instance_a(tmp_path / "a", ca, dns_server, https, b.port("mx")) as a:
                kind, _ = await Setup(a, b, https, dns_server).send("first, policy fetched")
                assert kind is EventKind.DELIVERED
            await https.stop()
            # A new policy id is announced but cannot be fetched, and a preferred MX appears
            # that the stored policy does not allow.
            dns_server.zone.remove("_mta-sts.b.test")
            dns_server.zone.add_txt("_mta-sts.b.test", "v=STSv1; id=20261121;", ttl=0)
            dns_server.zone.add_mx("b.test", 5, "rogue.b.test")
            dns_server.zone.add_a("rogue.b.test", "127.0.0.2")
            counter = ConnectionCounter()
            rogue = await asyncio.start_server(counter.handle, "127.0.0.2", b.port("mx"))
            # A restarted: nothing in memory, the policy only in its database.
            async with (rogue,
                        instance_a(tmp_path / "a", ca, dns_server, https, b.port("mx"),
                                   provisioned=True) as a2):
                s = Setup(a2, b, https, dns_server)
                kind, detail = await s.send("second, from the stored policy")
                assert kind is EventKind.DELIVERED, detail
                assert counter.connections == 0
                counts = await s.tls_counts()
                assert counts[TlsResultKey("b.test", "sts", "sts-policy-fetch-error")] == 1
                assert counts[TlsResultKey("b.test", "sts", "validation-failure",
                                           "rogue.b.test")] == 1
            assert [p for _h, p in https.requests] == [POLICY_PATH]

    asyncio.run(scenario())
