"""Spam scoring by a real rspamd (tests/support/rspamd.py: known verdicts by Subject): through
our HTTP client directly, and on the MX of a real instance through smtplib — rspamd "reject" is
550 5.7.1 with nothing stored, "add header" files into Junk, every verdict is recorded in X-Spam-*
fields, and rspamd being down is accepted (fail open) or answered 451 4.7.1 (fail closed)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.config import AuthenticationSettings
from mailprime.net.http_client import HttpClient
from mailprime.runtime import start_server
from mailprime.services.rspamd import Envelope, RspamdClient, SpamAction
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    provision,
    refusing_port,
    smtp_send,
)
from tests.support.rspamd import rspamd_server, rspamd_unavailable

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(rspamd_unavailable() is not None, reason=str(rspamd_unavailable()))]

BOB = "bob@b.test"
ACCOUNTS = {BOB: "bob-secret"}


def message(subject: str) -> bytes:
    return (f"From: <alice@sender.test>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n"
            "Message-ID: <1@sender.test>\r\nDate: Mon, 16 Jun 2025 10:00:00 +0000\r\n\r\nHello.\r\n").encode()


def test_client_reads_rspamd_verdicts(tmp_path: Path) -> None:
    envelope = Envelope("192.0.2.1", "client.test", "alice@sender.test", (BOB, "carol@b.test"), "Q1X2Y3")

    async def scenario(url: str) -> None:
        client = RspamdClient(HttpClient(), url, timeout=5.0)
        plain, junk, reject = [await client.scan(message(s), envelope)
                               for s in ("hello", "cheap JUNK-ME", "REJECT-ME now")]
        assert (plain.action, plain.rspamd_action, plain.score, plain.error) == (
            SpamAction.DELIVER, "no action", 0.0, "")
        assert (junk.action, junk.rspamd_action, junk.score, junk.required) == (
            SpamAction.JUNK, "add header", 8.0, 15.0)
        assert junk.symbols == ("MAILPRIME_TEST_JUNK",)
        assert junk.header == (b"X-Spam-Scanner: rspamd; action=add-header\r\nX-Spam-Flag: Yes\r\n"
                               b"X-Spam-Score: 8.00 / 15.00\r\nX-Spam-Symbols: MAILPRIME_TEST_JUNK\r\n")
        assert (reject.action, reject.rspamd_action) == (SpamAction.REJECT, "reject")

    with rspamd_server(tmp_path / "rspamd") as url:
        asyncio.run(scenario(url))
        log = (tmp_path / "rspamd" / "rspamd.log").read_text(errors="replace")
        assert "Q1X2Y3" in log and "192.0.2.1" in log  # the envelope went along as headers


def test_client_reports_an_unreachable_rspamd() -> None:
    async def scenario(port: int) -> None:
        scan = await RspamdClient(HttpClient(), f"http://127.0.0.1:{port}", timeout=2.0).scan(
            message("x"), Envelope("192.0.2.1", "h", "", (BOB,), "Q"))
        assert scan.error.startswith("unreachable") and b"result=error" in scan.header

    with refusing_port() as port:
        asyncio.run(scenario(port))


@asynccontextmanager
async def instance(tmp: Path, ca: trustme.CA, dns: DnsTestServer,
                   auth: AuthenticationSettings) -> AsyncIterator[Instance]:
    dns.zone.negative_ttl = 60
    dns.zone.add_txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    settings = make_settings(tmp, ca, hostname="mx.b.test", nameservers=[dns.address])
    settings.authentication = auth
    await provision(settings, Provisioning("b.test", dict(ACCOUNTS)))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, dict(ACCOUNTS), "b.test")
    finally:
        await server.stop(grace=2.0)


def send(inst: Instance, data: bytes) -> tuple[int, bytes]:
    try:
        result = smtp_send("127.0.0.1", inst.port("mx"), ctx=inst.client_tls(),
                           sender="bounce@sender.test", recipients=[BOB], message=data)
        return result.code, result.text.encode()
    except smtplib.SMTPDataError as exc:
        error = exc.smtp_error
        return exc.smtp_code, error if isinstance(error, bytes) else error.encode()


def test_mx_acts_on_rspamd_verdicts(tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer) -> None:
    async def scenario(url: str) -> None:
        async with instance(tmp_path / "mx", ca, dns_server, AuthenticationSettings(rspamd_url=url)) as inst:
            replies = [await asyncio.to_thread(send, inst, message(s))
                       for s in ("hello", "JUNK-ME", "REJECT-ME")]
            assert [code for code, _ in replies] == [250, 250, 550]
            assert replies[2][1] == b"5.7.1 Message rejected as spam"
            [(_m, inbox)] = await inst.mailbox(BOB)
            [(_m, junk)] = await inst.mailbox(BOB, "Junk")
            assert inbox.startswith(b"Received: ") and b"\r\nAuthentication-Results: mx.b.test;" in inbox
            assert b"\tarc=none\r\nX-Spam-Scanner: rspamd; action=no-action\r\nX-Spam-Flag: No\r\n" in inbox
            assert b"\r\nX-Spam-Flag: Yes\r\nX-Spam-Score: 8.00 / 15.00\r\n" in junk
            assert b"Subject: JUNK-ME" in junk

    with rspamd_server(tmp_path / "rspamd") as url:
        asyncio.run(scenario(url))


def test_rspamd_down_fails_open_or_closed(tmp_path: Path, ca: trustme.CA,
                                          dns_server: DnsTestServer) -> None:
    async def scenario(port: int) -> None:
        url = f"http://127.0.0.1:{port}"
        async with instance(tmp_path / "open", ca, dns_server, AuthenticationSettings(
                rspamd_url=url, rspamd_timeout=2.0)) as inst:
            assert (await asyncio.to_thread(send, inst, message("REJECT-ME")))[0] == 250
            [(_m, stored)] = await inst.mailbox(BOB)
            assert b"\r\nX-Spam-Scanner: rspamd; result=error (unreachable" in stored
        async with instance(tmp_path / "closed", ca, dns_server, AuthenticationSettings(
                rspamd_url=url, rspamd_timeout=2.0, rspamd_fail_open=False)) as inst:
            assert await asyncio.to_thread(send, inst, message("hello")) == (
                451, b"4.7.1 Spam scanner unavailable; try again later")
            assert await inst.mailbox(BOB) == []

    with refusing_port() as port:
        asyncio.run(scenario(port))
