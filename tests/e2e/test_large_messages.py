"""Bounded memory end to end: a 20 MB message goes over SMTP to a local mailbox and, through a
second instance found by MX lookup, to a remote one, while the Python allocations of both
instances together stay far below the message size (tracemalloc peak; the client runs in a
subprocess so its own copies of the message do not count). Bodies refused for size or cut off
by a vanished client leave no spool file behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import smtplib
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from mailprime.domain.ids import QueueId
from mailprime.domain.mail import EventKind
from mailprime.runtime import start_server
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    make_settings,
    provision,
    running_instance,
    smtp_send,
    wait_for,
)

pytestmark = pytest.mark.slow  # starts servers

ALICE, ALICE_PW = "alice@a.test", "alice-secret"
BOB = "bob@b.test"
SIZE = 20 * 1024 * 1024
# Python allocations allowed while the message passes through both instances: the design keeps
# about inline_max (1 MiB) per session and per delivery; the message is 20 MB.
MEMORY_BOUND = 8 * 1024 * 1024

# The client: smtplib in its own process (STARTTLS, AUTH when a user is given), printing the
# reply to the end of data as JSON.
CLIENT = r"""
import json, smtplib, ssl, sys
host, port, cafile, user, password, sender, rcpt, path = sys.argv[1:9]
with open(path, "rb") as fh:
    message = fh.read()
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, int(port), timeout=60) as client:
    client.ehlo("client.test")
    client.starttls(context=ctx)
    client.ehlo("client.test")
    if user:
        client.login(user, password)
    assert client.mail(sender)[0] == 250
    assert client.rcpt(rcpt)[0] == 250
    code, text = client.data(message)
print(json.dumps([code, text.decode()]))
"""


def big_message(size: int) -> bytes:
    """A MIME message of exactly `size` octets: 76-character base64 lines after a line of 8-bit
    text; an X-Pad header field takes up the difference."""
    head = (b"From: <alice@a.test>\r\nTo: <bob@b.test>\r\nSubject: big\r\n"
            b"Message-ID: <big.1@a.test>\r\nDate: Thu, 2 Jan 2030 03:04:05 +0000\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n")
    first = b"\r\nd\xc3\xa9j\xc3\xa0 vu\r\n"
    count = (size - len(head) - len(first) - 100) // 78
    text = base64.b64encode(os.urandom(count * 57))  # 57 octets -> 76 characters
    lines = b"".join(text[i:i + 76] + b"\r\n" for i in range(0, len(text), 76))
    pad = size - len(head) - len(first) - len(lines) - len(b"X-Pad: \r\n")
    return head + b"X-Pad: " + b"p" * pad + b"\r\n" + first + lines


async def send_from_subprocess(inst: Instance, listener: str, path: Path, sender: str,
                               rcpt: str, user: str = "", password: str = "") -> str:
    cafile = inst.settings.data_path / "ca.pem"
    inst.ca.cert_pem.write_to_path(str(cafile))
    argv = [sys.executable, "-c", CLIENT, "127.0.0.1", str(inst.port(listener)), str(cafile),
            user, password, sender, rcpt, str(path)]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    code, text = json.loads(done.stdout)
    assert code == 250, text
    return str(text)


def queued_as(reply: str) -> QueueId:
    return QueueId(reply.split("queued as ", 1)[1].split()[0])


def temp_files(inst: Instance) -> list[Path]:
    return list((inst.settings.spool_path / "tmp").glob("*.part"))


@asynccontextmanager
async def two_instances(tmp: Path, ca: trustme.CA,
                        dns: DnsTestServer) -> AsyncIterator[tuple[Instance, Instance]]:
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    async with (
        running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                         accounts={BOB: "bob-secret"}) as b,
        running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                         accounts={ALICE: ALICE_PW}, nameservers=[dns.address],
                         mx_port=b.port("mx")) as a,
    ):
        yield a, b


def test_a_20mb_message_passes_with_bounded_memory(tmp_path: Path, ca: trustme.CA,
                                                    dns_server: DnsTestServer) -> None:
    message = big_message(SIZE)
    assert len(message) == SIZE
    path = tmp_path / "message.eml"
    path.write_bytes(message)

    async def scenario() -> None:
        async with two_instances(tmp_path, ca, dns_server) as (a, b):
            bob = await b.server.store.get_account(BOB)
            assert bob is not None

            async def both_in_inbox() -> bool | None:
                return True if len(await b.server.store.list_messages(bob.id, "INBOX")) >= 2 else None

            tracemalloc.start()
            try:
                # Straight to B's MX, for a local mailbox ...
                local_reply = await send_from_subprocess(b, "mx", path, ALICE, BOB)
                # ... and submitted to A, which relays it to B over SMTP.
                qid = queued_as(await send_from_subprocess(a, "submission", path, ALICE, BOB,
                                                           ALICE, ALICE_PW))
                events = await a.wait_events(qid, (EventKind.DELIVERED, EventKind.DEFERRED,
                                                   EventKind.BOUNCED), deadline=60)
                assert events[-1].kind is EventKind.DELIVERED, events[-1]
                await wait_for(both_in_inbox, 30, "both messages in bob's INBOX")
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < MEMORY_BOUND, f"peak Python allocations {peak / 2**20:.1f} MiB"

            # Byte for byte: only trace fields were put in front.
            queued = await a.server.store.get_message(qid)
            assert queued is not None and queued.body_8bit and queued.size > SIZE
            relayed = await a.server.store.read_blob(queued.blob_id)
            assert relayed.endswith(message)
            assert relayed[:-SIZE].startswith(b"Received: from client.test")
            assert relayed[:-SIZE].count(b"\r\nReceived:") == 0  # A added one field only
            first, second = sorted(
                [await b.server.store.read_blob(m.blob_id)
                 for m in await b.server.store.list_messages(bob.id, "INBOX")],
                key=len)
            assert first.endswith(message) and first[:-SIZE].startswith(b"Received: ")
            assert f"id {queued_as(local_reply)}".encode() in first[:-SIZE]
            assert second.endswith(relayed) and second[:-len(relayed)].startswith(b"Received: ")
            assert temp_files(a) == [] and temp_files(b) == []

    asyncio.run(scenario())


@asynccontextmanager
async def small_limit_instance(tmp: Path, ca: trustme.CA) -> AsyncIterator[Instance]:
    settings = make_settings(tmp, ca, hostname="mx.b.test")
    settings.limits.max_message_size = 3 * 1024 * 1024  # RFC 1870 SIZE limit of this instance
    await provision(settings, Provisioning("b.test", {BOB: "bob-secret"}))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, {BOB: "bob-secret"}, "b.test")
    finally:
        await server.stop(grace=2.0)


def test_oversize_and_cut_off_bodies_leave_no_spool_file(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with small_limit_instance(tmp_path, ca) as inst:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await asyncio.to_thread(
                    smtp_send, "127.0.0.1", inst.port("mx"), ctx=inst.client_tls(), sender=ALICE,
                    recipients=[BOB], message=big_message(4 * 1024 * 1024))
            assert refused.value.smtp_code == 552
            spool = inst.settings.spool_path
            assert (spool / "tmp").is_dir()  # the body did go to a file, and it is gone
            assert temp_files(inst) == [] and list(spool.glob("??/*.eml")) == []

            # A client that vanishes in the middle of a 2 MiB body.
            sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", inst.port("mx")), 10)
            try:
                reader = sock.makefile("rb")
                try:
                    def start_body() -> None:
                        assert reader.readline().startswith(b"220")
                        sock.sendall(b"EHLO client.test\r\n")
                        while not reader.readline().startswith(b"250 "):
                            pass
                        sock.sendall(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n".encode())
                        for expected in (b"250", b"250", b"354"):
                            assert reader.readline().startswith(expected)
                        sock.sendall(big_message(2 * 1024 * 1024)[:-2])

                    await asyncio.to_thread(start_body)

                    async def spooling() -> bool | None:
                        return True if temp_files(inst) else None

                    await wait_for(spooling, 20, "the body to reach the spool")
                finally:
                    reader.close()
            finally:
                sock.close()

            async def cleaned() -> bool | None:
                return True if not temp_files(inst) else None

            await wait_for(cleaned, 20, "the cut-off body's file to be removed")
            assert list(spool.glob("??/*.eml")) == []

    asyncio.run(scenario())
