"""The private Postfix harness works: real Postfix, swaks, smtp-source and smtp-sink on loopback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postfix import (
    PostfixInstance,
    free_port,
    postfix_unavailable,
    run_smtp_source,
    smtp_sink,
)

pytestmark = [pytest.mark.postfix, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_postfix() -> None:
    if reason := postfix_unavailable():
        pytest.skip(reason)


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed")
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.test", *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[PostfixInstance]:
    with PostfixInstance(tmp_path, smtpd_port=free_port(), mydomain="example.test",
                         mode="mailbox") as pf:
        yield pf


def test_swaks_message_is_delivered_to_the_maildir(mailbox: PostfixInstance) -> None:
    sent = swaks(mailbox.smtpd_port, "--from", "alice@sender.test", "--to", "Bob@Example.test",
                 "--header", "Subject: harness check", "--body", "body line one")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "250 2.0.0 Ok: queued as" in sent.stdout

    [message] = mailbox.wait_for(1, timeout=10, recipient="bob@example.test")
    assert b"Subject: harness check\n" in message
    assert b"\nbody line one\n" in message
    assert b"by postfix-%d.example.test (Postfix)" % mailbox.smtpd_port in message
    assert mailbox.messages("carol@example.test") == []
    assert mailbox.messages() == [message]


def test_mailbox_refuses_other_domains(mailbox: PostfixInstance) -> None:
    sent = swaks(mailbox.smtpd_port, "--from", "alice@sender.test", "--to", "x@elsewhere.test")
    assert sent.returncode != 0
    assert "554 5.7.1" in sent.stdout  # Relay access denied
    assert mailbox.messages() == []


def test_relay_instance_relays_into_a_mailbox_instance(tmp_path: Path,
                                                       mailbox: PostfixInstance) -> None:
    with PostfixInstance(tmp_path, smtpd_port=free_port(), mydomain="relay.test", mode="relay",
                         relay_to=mailbox.address) as relay:
        for rcpt in ("bob@example.test", "carol@example.test"):
            sent = swaks(relay.smtpd_port, "--from", "alice@relay.test", "--to", rcpt,
                         "--body", f"for {rcpt}")
            assert sent.returncode == 0, sent.stdout + sent.stderr
        mailbox.wait_for(2, timeout=15)
        relay.wait_queue_empty(timeout=10)
        log = relay.log()

    [bob] = mailbox.messages("bob@example.test")
    [carol] = mailbox.messages("carol@example.test")
    assert b"for bob@example.test" in bob
    assert b"for carol@example.test" in carol
    # Both hops are on the message: the relay's Received under the mailbox's.
    assert bob.index(b"by postfix-%d.example.test" % mailbox.smtpd_port) < bob.index(
        b"by postfix-%d.relay.test" % relay.smtpd_port)
    assert f"relay=127.0.0.1[127.0.0.1]:{mailbox.smtpd_port}" in log
    assert "status=sent" in log


def test_discard_instance_accepts_and_drains(tmp_path: Path) -> None:
    with PostfixInstance(tmp_path, smtpd_port=free_port(), mydomain="bench.test",
                         mode="discard") as pf:
        elapsed = run_smtp_source("127.0.0.1", pf.smtpd_port, sessions=4, messages=40, size=2048,
                                  sender="src@bench.test", recipient="rcpt@far.test")
        assert elapsed > 0
        pf.wait_queue_empty(timeout=20)
        assert pf.queue_size() == 0
        assert pf.log().count("status=sent (benchmark peer)") == 40
        master = pf.master_pid
        assert master is not None and _alive(master)
    # The master and all its children are gone once stop() returns.
    assert not _alive(master)


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_relay_into_smtp_sink_counts_every_message(tmp_path: Path) -> None:
    sink_port = free_port()
    with smtp_sink(sink_port) as sink, PostfixInstance(
            tmp_path, smtpd_port=free_port(), mydomain="relay.test", mode="relay",
            relay_to=("127.0.0.1", sink_port)) as relay:
        run_smtp_source("127.0.0.1", relay.smtpd_port, sessions=2, messages=25, size=1024,
                        sender="src@relay.test", recipient="rcpt@far.test")
        sink.wait_for(25, timeout=20)
        relay.wait_queue_empty(timeout=10)
        assert sink.received == 25


def test_smtp_source_straight_into_smtp_sink() -> None:
    port = free_port()
    with smtp_sink(port) as sink:
        run_smtp_source("127.0.0.1", port, sessions=3, messages=30, size=512,
                        sender="a@b.test", recipient="c@d.test", reuse_connections=False)
        sink.wait_for(30, timeout=10)
        assert sink.received == 30


def test_instance_in_an_unsearchable_tmpdir_relocates_and_keeps_its_log(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    pf = PostfixInstance(private, smtpd_port=free_port(), mydomain="example.test", mode="discard")
    with pf:
        assert pf.root.parent != private
        root = pf.root
    assert not root.exists()
    assert "daemon started" in (private / f"postfix-{pf.smtpd_port}.maillog").read_text()


def test_rejects_inconsistent_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="relay_to"):
        PostfixInstance(tmp_path, smtpd_port=1, mydomain="x.test", mode="relay")
    with pytest.raises(ValueError, match="relay_to"):
        PostfixInstance(tmp_path, smtpd_port=1, mydomain="x.test", mode="mailbox",
                        relay_to=("127.0.0.1", 2))
    with pytest.raises(ValueError, match="mode"):
        PostfixInstance(tmp_path, smtpd_port=1, mydomain="x.test", mode="bogus")  # type: ignore[arg-type]


def test_restart_keeps_the_mail_and_a_late_peer_gets_the_deferred_message(tmp_path: Path) -> None:
    mailbox_port = free_port()
    with PostfixInstance(tmp_path, smtpd_port=free_port(), mydomain="relay.test", mode="relay",
                         relay_to=("127.0.0.1", mailbox_port)) as relay:
        sent = swaks(relay.smtpd_port, "--from", "a@relay.test", "--to", "bob@example.test",
                     "--body", "waited for you")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        relay.wait_log("status=deferred")  # nobody listens on mailbox_port yet
        assert relay.queue_size() == 1

        mailbox = PostfixInstance(tmp_path, smtpd_port=mailbox_port, mydomain="example.test")
        with mailbox:
            relay.flush()
            [first] = mailbox.wait_for(1, timeout=10)
            assert b"waited for you" in first
            relay.wait_queue_empty(timeout=10)

            mailbox.stop()
            assert mailbox.messages() == [first]  # the Maildir outlives the processes
            mailbox.start()
            sent = swaks(mailbox.smtpd_port, "--from", "a@relay.test", "--to", "bob@example.test",
                         "--body", "after restart")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert b"after restart" in mailbox.wait_for(2, timeout=10)[1]


def test_bench_runs_both_halves_and_prints_ratios(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import main

    assert main(["--messages", "20", "--sessions", "2", "--size", "1024", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "SMTP accept (durable)" in out
    assert "relay to smtp-sink" in out
    assert "not wired" not in out
    table = out.split("rates count from")[0]
    assert table.count("x\n") >= 2, out  # a ratio column on both rows
