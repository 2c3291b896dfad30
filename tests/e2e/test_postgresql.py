"""End to end on PostgreSQL: node A keeps everything (queue, mailboxes, events) in PostgreSQL,
node B in SQLite; the loopback DNS server routes b.test to B.

* A (in this process, `[storage] url = "postgresql://.../<fresh db>"`) takes a submission with
  AUTH and delivers it by MX to B; a local recipient on A gets it in the INBOX with UIDs; an
  unknown recipient at B bounces into a DSN in the sender's INBOX on A; a deferred message sits
  in A's queue, and `python -m mailprime queue list --config ...` shows it from PostgreSQL.
* `mailprime serve --workers 2` as a real subprocess: two processes share one PostgreSQL
  database and one port (SO_REUSEPORT) and accept 200 messages over 20 connections; every one
  is filed exactly once, under a UID of its own (rows counted in the database).

PostgreSQL is looked for at 127.0.0.1:5432 with trust auth, as in tests/storage/conftest.py:
each test gets a brand-new database `mailprime_e2e_<random>`, dropped when the module is done.
Without a server every test here is skipped with a message saying so.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
import trustme

from mailprime.config import Settings, load_settings
from mailprime.domain.mail import EventKind, RecipientStatus
from mailprime.storage.sql import open_store
from tests.support.dns_server import DnsTestServer
from tests.support.instance import (
    Instance,
    Provisioning,
    dsn_field,
    free_port,
    parse,
    parse_dsn,
    provision,
    running_instance,
    simple_message,
    submit,
)
from tests.support.postgres import PG_SKIP, PgDatabases, admin_url

pytestmark = pytest.mark.slow  # starts servers or runs the real command

PG_SKIP_E2E = PG_SKIP + ": the end-to-end PostgreSQL tests need it"

ALICE = "alice@a.test"
DAVE = "dave@a.test"
BOB = "bob@b.test"
OUTCOMES = (EventKind.DELIVERED, EventKind.BOUNCED, EventKind.EXPIRED, EventKind.DEFERRED)
DEADLINE = 30.0  # for a subprocess to start, accept or stop


# PostgreSQL databases ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg() -> Iterator[PgDatabases]:
    admin = admin_url()
    if admin is None:
        pytest.skip(PG_SKIP_E2E)
    dbs = PgDatabases(admin, prefix="mailprime_e2e")
    try:
        yield dbs
    finally:
        dbs.drop_all()


# Two instances: A on PostgreSQL, B on SQLite -----------------------------------------------

@dataclass
class Nodes:
    a: Instance
    b: Instance
    a_config: Path  # a TOML file for the CLI, naming A's PostgreSQL database


async def _with_nodes(tmp: Path, ca: trustme.CA, dns: DnsTestServer, pg_url: str,
                      scenario: Callable[[Nodes], Awaitable[None]]) -> None:
    """Starts B (b.test, SQLite) then A (a.test, PostgreSQL, MX look-ups on the test DNS, its
    outbound port B's MX port), runs `scenario(nodes)`, and stops both."""
    dns.zone.add_mx("b.test", 10, "mx.b.test")
    dns.zone.add_a("mx.b.test", "127.0.0.1")
    # down.test's MX is on 127.0.0.2, where nothing listens on B's port: connections are refused.
    dns.zone.add_mx("down.test", 10, "mx.down.test")
    dns.zone.add_a("mx.down.test", "127.0.0.2")
    async with (
        running_instance(tmp / "b", ca, domain="b.test", hostname="mx.b.test",
                         accounts={BOB: "bob-secret"}) as b,
        # retry_first=60: a deferred recipient stays pending for the rest of the test.
        running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                         accounts={ALICE: "alice-secret", DAVE: "dave-secret"},
                         nameservers=[dns.address], mx_port=b.port("mx"), storage_url=pg_url,
                         retry_first=60) as a,
    ):
        config = tmp / "a-cli.toml"
        config.write_text(tomli_w.dumps({"server": {"hostname": "mail.a.test",
                                                    "data_dir": str(tmp / "a")},
                                         "storage": {"url": pg_url}}))
        await scenario(Nodes(a, b, config))


def test_submission_is_delivered_by_mx_and_filed_locally_on_postgresql(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer, pg: PgDatabases) -> None:
    pg_url = pg.create(driver="postgresql")

    async def scenario(n: Nodes) -> None:
        # Submitted with AUTH on A, delivered by MX to B.
        result = await submit(n.a, ALICE, ALICE, [BOB], simple_message(ALICE, BOB, "Via PG"))
        qid = result.queue_id
        events = await n.a.wait_events(qid, OUTCOMES)
        assert [(e.kind, e.recipient) for e in events] == [
            (EventKind.QUEUED, BOB), (EventKind.DELIVERED, BOB)]
        assert events[1].detail.startswith("250 2.0.0 ")
        (rcpt,) = await n.a.recipients(qid)
        assert (rcpt.status, rcpt.attempts) == (RecipientStatus.DELIVERED, 1)
        ((stored, content),) = await n.b.wait_mailbox(BOB, 1)
        assert stored.uid == 1
        assert parse(content)["Subject"] == "Via PG"

        # Local deliveries on A: filed in dave's INBOX (in PostgreSQL) with ascending UIDs.
        for subject in ("First", "Second"):
            local = await submit(n.a, ALICE, ALICE, [DAVE], simple_message(ALICE, DAVE, subject))
            assert local.code == 250
        filed = await n.a.wait_mailbox(DAVE, 2)
        assert [m.uid for m, _ in filed] == [1, 2]
        assert [parse(c)["Subject"] for _, c in filed] == ["First", "Second"]
        account = await n.a.server.store.get_account(DAVE)
        assert account is not None
        inbox = await n.a.server.store.get_mailbox(account.id, "INBOX")
        assert inbox is not None and inbox.uidvalidity > 0 and inbox.uidnext == 3

        # The rows are in PostgreSQL itself, not in a SQLite file beside it.
        assert pg.count(pg_url, "SELECT count(*) FROM mailbox_messages") == 2
        assert pg.count(pg_url, f"SELECT count(*) FROM events WHERE queue_id = '{qid}'") == 2
        assert not (tmp_path / "a" / "mailprime.db").exists()

    asyncio.run(_with_nodes(tmp_path, ca, dns_server, pg_url, scenario))


def test_bounce_dsn_deferral_and_queue_cli_on_postgresql(
        tmp_path: Path, ca: trustme.CA, dns_server: DnsTestServer, pg: PgDatabases) -> None:
    pg_url = pg.create(driver="postgresql")

    async def scenario(n: Nodes) -> None:
        nobody = "nobody@b.test"
        bounced = await submit(n.a, ALICE, ALICE, [nobody], simple_message(ALICE, nobody, "Hi?"))
        events = await n.a.wait_events(bounced.queue_id, OUTCOMES)
        outcome = next(e for e in events if e.kind in OUTCOMES)  # (SUPPRESSED follows it)
        assert (outcome.kind, outcome.recipient) == (EventKind.BOUNCED, nobody)
        assert outcome.detail.startswith("550 5.1.1 ")
        # The DSN is filed in alice's INBOX on A, i.e. in PostgreSQL.
        ((stored, content),) = await n.a.wait_mailbox(ALICE, 1)
        assert stored.uid == 1
        (status,) = parse_dsn(content).per_recipient
        assert dsn_field(status, "Final-Recipient") == f"rfc822; {nobody}"
        assert dsn_field(status, "Action") == "failed"
        assert dsn_field(status, "Status") == "5.1.1"

        target = "someone@down.test"
        deferred = await submit(n.a, ALICE, ALICE, [target], simple_message(ALICE, target, "Later"))
        events = await n.a.wait_events(deferred.queue_id, OUTCOMES)
        assert events[-1].kind is EventKind.DEFERRED
        assert events[-1].detail.startswith("451 4.4.1 ")

        # The queue CLI, a separate process, reads A's queue from PostgreSQL.
        listed = await asyncio.to_thread(_cli, "queue", "list", "--config", str(n.a_config))
        assert deferred.queue_id in listed and target in listed and "pending" in listed
        assert bounced.queue_id not in listed  # finished: only with --all
        everything = await asyncio.to_thread(_cli, "queue", "list", "--all", "--config",
                                             str(n.a_config))
        assert bounced.queue_id in everything and nobody in everything and "bounced" in everything
        assert deferred.queue_id in everything

    asyncio.run(_with_nodes(tmp_path, ca, dns_server, pg_url, scenario))


def _cli(*args: str) -> str:
    """Runs `python -m mailprime ARGS` (no MAILPRIME_* overrides); returns its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPRIME_")}
    done = subprocess.run([sys.executable, "-m", "mailprime", *args], capture_output=True,
                          text=True, timeout=DEADLINE, env=env, stdin=subprocess.DEVNULL,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# Two worker processes sharing one PostgreSQL database -----------------------------------------

CONNECTIONS = 20
PER_CONNECTION = 10
PASSWORD = "two-workers-password"
RCPT = "bob@a.test"


def _send_batch(port: int, batch: int) -> list[str]:
    """Blocking: one connection, AUTH, PER_CONNECTION messages; returns the Message-IDs that got
    a 250."""
    acked = []
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as client:
        client.login(ALICE, PASSWORD)
        for n in range(PER_CONNECTION):
            message_id = f"<w{batch}-{n}@a.test>"
            body = (f"From: <{ALICE}>\r\nTo: <{RCPT}>\r\nSubject: {batch}/{n}\r\n"
                    f"Message-ID: {message_id}\r\n\r\nHello.\r\n")
            client.sendmail(ALICE, [RCPT], body)  # raises unless accepted
            acked.append(message_id)
    return acked


def _wait_log(log: Path, proc: subprocess.Popen[bytes], pattern: str, count: int) -> list[str]:
    """Polls the server's log file until `pattern` has at least `count` matches. Polling only
    waits for an outcome of the server processes (start-up), never orders test steps; it fails
    early, with the log, if the server died."""
    end = time.monotonic() + DEADLINE
    while True:
        found = re.findall(pattern, log.read_text() if log.exists() else "")
        if len(found) >= count:
            return found
        assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{_tail(log)}"
        assert time.monotonic() < end, f"timed out waiting for {count} x {pattern!r}:\n{_tail(log)}"
        time.sleep(0.05)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:] if log.exists() else "(no log)"


def test_two_worker_processes_share_postgresql_without_loss_or_duplicate(
        tmp_path: Path, pg: PgDatabases) -> None:
    pg_url = pg.create(driver="postgresql")
    port = free_port()
    log = tmp_path / "mail.log"
    config = tmp_path / "mailprime.toml"
    config.write_text(tomli_w.dumps({
        "server": {"hostname": "mail.a.test", "data_dir": "."},
        "storage": {"url": pg_url},
        # No TLS (nothing here needs a certificate); AUTH in the clear only on loopback.
        "listeners": [{"name": "submission", "role": "submission", "address": "127.0.0.1",
                       "port": port, "tls": "none", "allow_plaintext_auth_on_loopback": True}],
        "delivery": {"poll_interval": 0.2},
        "log": {"file": str(log)},
    }))
    settings = load_settings(config, environ={})
    asyncio.run(provision(settings, Provisioning("a.test", {ALICE: PASSWORD, RCPT: "x"})))

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPRIME_")}
    with open(tmp_path / "serve.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailprime", "serve", "--workers", "2",
                                 "--config", str(config)], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            # Each worker logs "ready: pid=N" once its listener is bound.
            ready = _wait_log(log, proc, r"ready: pid=(\d+)", 2)
            worker_pids = set(ready)
            assert len(worker_pids) == 2, ready

            with ThreadPoolExecutor(max_workers=5) as pool:
                batches = list(pool.map(lambda b: _send_batch(port, b), range(CONNECTIONS)))
            acked = [mid for batch in batches for mid in batch]
            assert len(acked) == len(set(acked)) == CONNECTIONS * PER_CONNECTION

            proc.send_signal(signal.SIGTERM)  # the parent passes it on to both workers
            assert proc.wait(DEADLINE) == 0, _tail(log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Both processes took connections (20 connections spread by the kernel's 4-tuple hash: the
    # chance that all land on one of two is 2**-19), and both logged what they accepted.
    accepted = re.findall(r"\[(\d+)\]: \w+: listener=submission, .*status=accepted",
                          log.read_text())
    assert len(accepted) == CONNECTIONS * PER_CONNECTION
    assert set(accepted) == worker_pids

    # In the database: every acknowledged message filed exactly once, UIDs 1..200 without a gap
    # or a repeat although two processes allocated them concurrently.
    total = CONNECTIONS * PER_CONNECTION
    assert pg.count(pg_url, "SELECT count(*) FROM mailbox_messages") == total
    assert pg.count(pg_url, "SELECT count(DISTINCT uid) FROM mailbox_messages") == total
    assert pg.count(pg_url, "SELECT min(uid) FROM mailbox_messages") == 1
    assert pg.count(pg_url, "SELECT max(uid) FROM mailbox_messages") == total
    assert pg.count(pg_url, "SELECT count(*) FROM events WHERE kind = 'stored'") == total
    assert sorted(asyncio.run(_message_ids(settings))) == sorted(acked)


async def _message_ids(settings: Settings) -> list[str]:
    """The Message-ID of every message in RCPT's INBOX, read back through the store."""
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        account = await store.get_account(RCPT)
        assert account is not None
        return [str(parse(await store.read_blob(m.blob_id))["Message-ID"])
                for m in await store.list_messages(account.id, "INBOX")]
    finally:
        await store.close()
