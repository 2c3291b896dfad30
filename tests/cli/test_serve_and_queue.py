"""`mailprime serve` as a real process, and `mailprime queue` on the message it could not deliver.

The data directory comes from `init`; the test points its listeners at free ports, its DNS at
the test DNS server (MX down.test -> 127.0.0.1) and its outbound port at one that refuses
connections, so a submitted message is deferred and stays queued. `queue retry` against the
running server makes it try again at once; SIGTERM stops it cleanly (exit 0); then list, show,
flush and delete work on the stopped server's database.
"""

from __future__ import annotations

import json
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w
import trustme

from tests.cli.conftest import DataDir, cli_env
from tests.support.dns_server import DnsTestServer
from tests.support.instance import free_port, refusing_port, simple_message, smtp_send

pytestmark = pytest.mark.slow  # starts servers or runs the real command

POSTMASTER = "postmaster@a.test"
TARGET = "someone@down.test"
DEADLINE = 30.0


def configure(data_dir: DataDir, ca: trustme.CA, nameserver: str, mx_port: int) -> dict[str, int]:
    """Rewrites the config `init` wrote for the test; returns the listener ports."""
    doc = tomllib.loads(data_dir.config.read_text())
    ports = {}
    for listener in doc["listeners"]:
        listener["port"] = ports[listener["name"]] = free_port()
    doc["http"]["port"] = ports["http"] = free_port()  # init turns the HTTP listener on
    doc["delivery"].update(mx_port=mx_port, retry_first=60, retry_max_interval=60,
                           poll_interval=0.2, connect_timeout=3.0)
    doc["dns"] = {"nameservers": [nameserver], "timeout": 2.0}
    doc["log"] = {"file": str(data_dir.root / "mailprime.log")}
    data_dir.config.write_text(tomli_w.dumps(doc))
    # A certificate from the test CA replaces init's self-signed one, so clients verify it.
    cert = ca.issue_cert("mail.a.test", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(data_dir.root / "tls" / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(data_dir.root / "tls" / "cert.pem"))
    return ports


def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes],
               log: Path) -> None:
    """Polls `check()` (a file appearing, a log line) for an asynchronous outcome of the server
    process, with a deadline; fails early, with the log, if the server died."""
    end = time.monotonic() + DEADLINE
    while not check():
        text = log.read_text() if log.exists() else ""
        assert proc.poll() is None, f"server exited with {proc.returncode} waiting for {what}:\n{text}"
        assert time.monotonic() < end, f"timed out waiting for {what}:\n{text}"
        time.sleep(0.05)


@contextmanager
def serving(data_dir: DataDir) -> Iterator[subprocess.Popen[bytes]]:
    """`mailprime serve` in a child process; killed if the test fails before it stopped it."""
    with open(data_dir.root / "serve.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mailprime", "serve", "--config",
                                 str(data_dir.config)], cwd=data_dir.root, env=cli_env(),
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=DEADLINE)


def test_serve_defers_then_queue_commands(data_dir: DataDir, ca: trustme.CA,
                                         dns_server: DnsTestServer) -> None:
    dns_server.zone.add_mx("down.test", 10, "mx.down.test")
    dns_server.zone.add_a("mx.down.test", "127.0.0.1")
    log = data_dir.root / "mailprime.log"
    ready = data_dir.root / "run" / "ready.json"
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    with refusing_port() as dead_port:
        ports = configure(data_dir, ca, dns_server.address, dead_port)
        with serving(data_dir) as proc:
            wait_until("ready.json", ready.exists, proc, log)
            assert json.loads(ready.read_text())["ports"] == ports

            result = smtp_send("127.0.0.1", ports["submission"], ctx=ctx, sender=POSTMASTER,
                               recipients=[TARGET], message=simple_message(POSTMASTER, TARGET, "x"),
                               user=POSTMASTER, password=data_dir.password)
            qid = result.queue_id
            first = re.compile(rf"{qid}: to=<{re.escape(TARGET)}>, relay=none, delay=[0-9.]+, "
                               r"attempt_s=[0-9.]+, attempts=1, status=deferred")
            wait_until("the first deferral", lambda: bool(first.search(log.read_text())), proc, log)

            # Another process (this CLI) changes the queue under the running server.
            listed, retried = data_dir.cli("queue", "list"), data_dir.cli("queue", "retry", qid)
            assert listed.code == 0 and qid in listed.out and TARGET in listed.out
            assert "pending" in listed.out
            assert retried.code == 0 and f"1 recipient(s) of {qid}" in retried.text
            second = re.compile(rf"{qid}: to=<{re.escape(TARGET)}>, relay=none, delay=[0-9.]+, "
                                r"attempt_s=[0-9.]+, attempts=2, status=deferred")
            wait_until("the retry", lambda: bool(second.search(log.read_text())), proc, log)

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE) == 0
        assert not ready.exists()  # a stopped server does not look ready
        text = log.read_text()
        assert "shutting down: draining sessions and deliveries" in text
        assert text.rstrip().endswith("stopped")
        assert f"{qid}: listener=submission" in text and "status=accepted" in text
        # Nobody can connect any more.
        try:
            smtplib.SMTP("127.0.0.1", ports["submission"], timeout=5).close()
            raise AssertionError("the listener still accepts connections")
        except ConnectionRefusedError:
            pass

    shown = data_dir.cli("queue", "show", qid)
    assert shown.code == 0
    assert f"from=<{POSTMASTER}>" in shown.text
    assert shown.text.count("deferred") == 2 and "queued" in shown.text
    assert f"connect to mx.down.test[127.0.0.1]:{dead_port}: Connection refused" in shown.text

    flushed = data_dir.cli("queue", "flush")
    assert flushed.code == 0 and "1 recipient(s) scheduled" in flushed.text
    deleted = data_dir.cli("queue", "delete", qid)
    assert deleted.code == 0 and f"{qid} deleted" in deleted.text

    listed, shown, retried, again = data_dir.cli_many(
        ["queue", "list"], ["queue", "show", qid], ["queue", "retry", qid],
        ["queue", "delete", qid])
    assert listed.code == 0 and "queue is empty" in listed.text
    assert shown.code == 1 and f"no queued message {qid}" in shown.text
    assert retried.code == 1 and f"no pending recipients for {qid}" in retried.text
    assert again.code == 1
