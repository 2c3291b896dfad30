"""Crash safety (issue 2): SIGKILL while clients are sending loses nothing acknowledged, and after
restart every acknowledged message is delivered exactly once.

Phase 1: node A accepts submissions for remote.test while its MX target refuses connections, so
everything stays queued; A is killed with SIGKILL mid-stream. Phase 2: A restarts with the MX
target pointing at node B (a second real mailprime process, MX for remote.test); A delivers its
queue. Every Message-ID that got a 250 must be in B's mailbox exactly once.
"""

from __future__ import annotations

import asyncio
import email
import json
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from mailprime.config import load_settings
from mailprime.domain.mail import RecipientStatus
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import open_store
from tests.support.dns_server import DnsTestServer
from tests.support.instance import free_port
from tests.support.serve import serving

PASSWORD = "crash-test-password"


def write_config(data: Path, *, hostname: str, submission_port: int, mx_port: int,
                 dns: str, remote_mx_port: int) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    config = data / "mailprime.toml"
    config.write_text(f"""
[server]
hostname = "{hostname}"
data_dir = "."

[[listeners]]
name = "mx"
role = "mx"
port = {mx_port}
tls = "none"

[[listeners]]
name = "submission"
role = "submission"
port = {submission_port}
tls = "none"
allow_plaintext_auth_on_loopback = true

[dns]
nameservers = ["{dns}"]
timeout = 2.0

[delivery]
mx_port = {remote_mx_port}
retry_first = 1
retry_max_interval = 1
poll_interval = 0.2
connect_timeout = 2.0
""")
    return config


async def provision(config: Path, domain: str, accounts: list[str]) -> None:
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        await store.add_domain(domain)
        for address in accounts:
            await store.add_account(address, hash_password(PASSWORD))
    finally:
        await store.close()


def sender_thread(port: int, index: int, count: int, acked: list[str], stop: threading.Event) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("alice@origin.test", PASSWORD)
            for n in range(count):
                if stop.is_set():
                    return
                message_id = f"<crash-{index}-{n}@origin.test>"
                body = (f"From: alice@origin.test\r\nTo: bob@remote.test\r\nSubject: {n}\r\n"
                        f"Message-ID: {message_id}\r\n\r\n" + ("x" * 76 + "\r\n") * 26)
                client.sendmail("alice@origin.test", ["bob@remote.test"], body)
                acked.append(message_id)  # only after the 250
    except (smtplib.SMTPException, OSError):
        return  # the server was killed under us: expected


async def queue_state(config: Path) -> tuple[int, int, int]:
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        pending = delivered = total = 0
        for _message, recipients in await store.list_queue(100_000):
            for r in recipients:
                total += 1
                pending += r.status is RecipientStatus.PENDING
                delivered += r.status is RecipientStatus.DELIVERED
        return pending, delivered, total
    finally:
        await store.close()


async def inbox_message_ids(config: Path, address: str) -> list[str]:
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        account = await store.get_account(address)
        assert account is not None
        ids = []
        for m in await store.list_messages(account.id, "INBOX"):
            parsed = email.message_from_bytes(await store.read_blob(m.blob_id))
            ids.append(str(parsed["Message-ID"]))
        return ids
    finally:
        await store.close()


@pytest.mark.slow
def test_sigkill_while_sending_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    dns = DnsTestServer()
    dns.zone.add_mx("remote.test", 10, "mx.remote.test")
    dns.zone.add_a("mx.remote.test", "127.0.0.1")
    dns.start()
    try:
        b_mx = free_port()
        closed_port = free_port()  # nothing listens here during phase 1
        a_config = write_config(tmp_path / "a", hostname="a.origin.test",
                                submission_port=free_port(), mx_port=free_port(),
                                dns=dns.address, remote_mx_port=closed_port)
        b_config = write_config(tmp_path / "b", hostname="mx.remote.test",
                                submission_port=free_port(), mx_port=b_mx, dns=dns.address,
                                remote_mx_port=closed_port)
        asyncio.run(provision(a_config, "origin.test", ["alice@origin.test"]))
        asyncio.run(provision(b_config, "remote.test", ["bob@remote.test"]))
        a_port = load_settings(a_config).listeners[1].port

        # Phase 1: send from 4 clients, SIGKILL node A mid-stream.
        acked: list[str] = []
        stop = threading.Event()
        with serving(a_config) as proc_a:
            threads = [threading.Thread(target=sender_thread, args=(a_port, i, 200, acked, stop))
                       for i in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(acked) < 120 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait(10)
            stop.set()
            for t in threads:
                t.join(15)
        acknowledged = set(acked)
        assert len(acknowledged) >= 120

        # After the crash: every acknowledged message is in A's queue.
        pending, _delivered, total = asyncio.run(queue_state(a_config))
        assert total >= len(acknowledged)
        assert pending == total

        # Phase 2: B up, A restarted with the real MX port; wait for the queue to drain.
        with serving(b_config), serving(a_config, {"MAILPRIME_DELIVERY_MX_PORT": str(b_mx)}):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                pending, delivered, total = asyncio.run(queue_state(a_config))
                if pending == 0:
                    break
                time.sleep(0.3)
            assert pending == 0, f"{pending} recipients still pending after restart"
            assert delivered == total

        ids = asyncio.run(inbox_message_ids(b_config, "bob@remote.test"))
        counts: dict[str, int] = {}
        for mid in ids:
            counts[mid] = counts.get(mid, 0) + 1
        duplicates = {k: v for k, v in counts.items() if v > 1}
        assert not duplicates, f"delivered twice: {json.dumps(duplicates)[:500]}"
        missing = acknowledged - set(counts)
        assert not missing, f"acknowledged but never delivered: {sorted(missing)[:10]}"
    finally:
        dns.stop()
