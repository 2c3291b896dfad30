"""The mailprime halves of the benchmark cases: a real `mailprime serve` process (the same
command an operator runs), configured under the bench work dir on free loopback ports.

- accept: smtp-source -> mailprime MX -> local mailbox (message + mailbox row committed and
  fsynced before each 250; group commit shares fsyncs between sessions).
- relay:  smtp-source -> mailprime MX -> alias sink@bench.test -> sink@[127.0.0.1] -> queue ->
  delivery worker (SMTP client, connection reuse) -> smtp-sink.

The MX verifies what it receives ([authentication] verify, on by default): SPF for the envelope
sender and DMARC for the From domain, source.test. So that those look-ups are answered (not timed
out, nor failed fast by whatever resolver the machine has), each run starts the loopback DNS
server of the tests with source.test's records (SPF passing 127.0.0.1, DMARC p=none) and points
[dns] at it; the MX's resolver caches them like any others. Postfix in the peer half does no
SPF/DMARC checks at all, so the ratio charges mailprime for its verification.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.dns_server import DnsTestServer, Zone
from tests.support.postfix import free_port, smtp_sink
from tests.support.serve import serving

from bench.smtp_source import Load, Measurement, send
from mailprime.config import load_settings
from mailprime.domain.mail import RecipientStatus
from mailprime.storage.sql import open_store

WORKERS = int(os.environ.get("MAILPRIME_BENCH_WORKERS", "0"))  # 0: one per core


def _sender_zone() -> Zone:
    """What the MX looks up for the load (bench.smtp_source: MAIL FROM and From: are
    load@source.test, sent from 127.0.0.1)."""
    zone = Zone(negative_ttl=3600)
    zone.add_txt("source.test", "v=spf1 ip4:127.0.0.1 -all", ttl=3600)
    zone.add_txt("_dmarc.source.test", "v=DMARC1; p=none", ttl=3600)
    return zone


def _config(workdir: Path, *, mx_port: int, remote_port: int, workers: int, nameserver: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mailprime.toml"
    config.write_text(f"""
[dns]
nameservers = ["{nameserver}"]

[server]
hostname = "bench.mailprime.test"
workers = {workers}

[[listeners]]
name = "mx"
role = "mx"
port = {mx_port}
tls = "none"

[delivery]
mx_port = {remote_port}
concurrency = 100
per_destination_connections = 20
poll_interval = 0.2

[limits]
max_connections_per_ip = 200

[log]
level = "WARNING"
""")
    return config


async def _provision(config: Path, *, alias_to: str | None) -> None:
    from mailprime.services.passwords import hash_password  # noqa: PLC0415

    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        await store.add_domain("bench.test")
        if alias_to:
            await store.add_alias("sink@bench.test", alias_to)
        else:
            await store.add_account("sink@bench.test", hash_password("bench"))
    finally:
        await store.close()


async def _pending(config: Path) -> int:
    settings = load_settings(config)
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        return sum(r.status is RecipientStatus.PENDING
                   for _m, rs in await store.list_queue(1_000_000) for r in rs)
    finally:
        await store.close()


@contextmanager
def _serve(config: Path) -> Iterator[None]:
    with serving(config):
        time.sleep(0.3)  # let every worker process bind (SO_REUSEPORT) before the load
        yield


def mailprime_accept(workdir: Path, load: Load) -> Measurement:
    port = free_port()
    with DnsTestServer(_sender_zone()) as dns:
        config = _config(workdir, mx_port=port, remote_port=25, workers=WORKERS, nameserver=dns.address)
        asyncio.run(_provision(config, alias_to=None))
        return _accept(config, port, load)


def _accept(config: Path, port: int, load: Load) -> Measurement:
    with _serve(config):
        start = time.perf_counter()
        accepted = send("127.0.0.1", port, load)
        done = time.perf_counter() - start  # stored in the mailbox: nothing left to deliver
    return Measurement(load.messages, accepted, done)


def mailprime_relay(workdir: Path, load: Load) -> Measurement:
    port, sink_port = free_port(), free_port()
    with DnsTestServer(_sender_zone()) as dns:
        config = _config(workdir, mx_port=port, remote_port=sink_port, workers=WORKERS,
                         nameserver=dns.address)
        asyncio.run(_provision(config, alias_to="sink@[127.0.0.1]"))
        return _relay(config, port, sink_port, load)


def _relay(config: Path, port: int, sink_port: int, load: Load) -> Measurement:
    with smtp_sink(sink_port) as sink, _serve(config):
        start = time.perf_counter()
        accepted = send("127.0.0.1", port, load)
        sink.wait_for(load.messages, 60.0 + load.messages / 20)
        done = time.perf_counter() - start
    return Measurement(load.messages, accepted, done)
