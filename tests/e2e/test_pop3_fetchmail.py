"""fetchmail, the standard POP3 retrieval client, against a real instance: it logs in over STLS
(mandatory TLS 1.2+, certificate checked against the test CA), downloads every message into an
MDA that writes one file per message, and with --keep leaves them on the server while with
--nokeep the server deletes them at QUIT.

fetchmail runs as a subprocess in a thread (`asyncio.to_thread`) while the instance serves on the
test's event loop. Skipped with a message when fetchmail is not installed (Debian package
fetchmail; `make peers` installs it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailprime.runtime import start_server
from tests.support.instance import Instance, Provisioning, make_settings, provision, submit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("fetchmail") is None,
                       reason="fetchmail not installed (Debian: apt-get install fetchmail; make peers)"),
]

ALICE = "alice@a.test"
BOB = "bob@a.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
# One file per message: fetchmail runs the MDA once per message, one after the other.
MDA_SCRIPT = '#!/bin/sh\nn=$(ls "$1" | wc -l)\ncat > "$1/msg-$n.eml"\n'


@dataclass(frozen=True)
class Fetch:
    code: int
    output: str
    messages: list[bytes]


@asynccontextmanager
async def instance(tmp: Path, ca: trustme.CA) -> AsyncIterator[Instance]:
    """`running_instance`, but with a certificate that also has a subject CommonName: fetchmail
    6.4 refuses a certificate without one ("Server name not specified in certificate!")."""
    settings = make_settings(tmp, ca, hostname="mail.a.test")
    cert = ca.issue_cert("mail.a.test", "localhost", "127.0.0.1", common_name="localhost")
    cert.private_key_pem.write_to_path(str(settings.key_path))
    cert.cert_chain_pems[0].write_to_path(str(settings.cert_path))
    await provision(settings, Provisioning("a.test", dict(PASSWORDS)))
    server = await start_server(settings)
    try:
        yield Instance(server, settings, ca, dict(PASSWORDS), "a.test")
    finally:
        await server.stop(grace=2.0)


def message(subject: str) -> bytes:
    return (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n\r\n"
            f".a line with a leading dot\r\nbody of {subject}\r\n").encode()


def fetchmail(inst: Instance, work: Path, *, keep: bool) -> Fetch:
    """Blocking: one fetchmail run over STLS on the instance's "pop3" port."""
    home, out = work / "home", work / f"out-{'keep' if keep else 'nokeep'}"
    for path in (home, out):
        path.mkdir(parents=True, exist_ok=True)
    ca_file, mda = work / "ca.pem", work / "mda.sh"
    inst.ca.cert_pem.write_to_path(str(ca_file))
    mda.write_text(MDA_SCRIPT)
    mda.chmod(0o755)
    rc = work / "fetchmailrc"
    rc.write_text(
        f'poll localhost protocol POP3 service {inst.port("pop3")}\n'
        f'  user "{BOB}" there with password "{PASSWORDS[BOB]}" is "bob" here\n'
        f'  sslproto "TLS1.2+" sslcertck sslcertfile "{ca_file}"\n'
        # fetchall: the --keep run's UIDs are remembered as seen, and the --nokeep run must
        # still download (and so delete) them.
        f'  {"keep" if keep else "nokeep"} fetchall mda "{mda} {out}"\n')
    rc.chmod(0o600)  # fetchmail refuses a run control file others can read
    done = subprocess.run(
        ["fetchmail", "-v", "--nosyslog", "--invisible", "-f", str(rc)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "FETCHMAILHOME": str(home)})
    files = sorted(out.iterdir(), key=lambda p: int(p.stem.split("-")[1]))
    return Fetch(done.returncode, done.stdout + done.stderr, [f.read_bytes() for f in files])


def test_fetchmail_over_stls_keep_then_nokeep(tmp_path: Path, ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with instance(tmp_path / "a", ca) as inst:
            for subject in ("first", "second"):
                await submit(inst, ALICE, ALICE, [BOB], message(subject))
            stored = [content for _, content in await inst.wait_mailbox(BOB, 2)]

            kept = await asyncio.to_thread(fetchmail, inst, tmp_path / "fm", keep=True)
            assert kept.code == 0, kept.output  # 0: mail was retrieved
            assert "POP3> STLS" in kept.output and "POP3< +OK Begin TLS negotiation" in kept.output
            assert "2 messages for bob@a.test" in kept.output, kept.output
            # fetchmail hands the MDA LF line ends; otherwise the message is as stored.
            assert kept.messages == [c.replace(b"\r\n", b"\n") for c in stored]
            assert len(await inst.mailbox(BOB)) == 2  # --keep: still on the server

            deleted = await asyncio.to_thread(fetchmail, inst, tmp_path / "fm", keep=False)
            assert deleted.code == 0, deleted.output
            assert deleted.messages == kept.messages
            assert "POP3> DELE 1" in deleted.output and "POP3> DELE 2" in deleted.output
            assert await inst.mailbox(BOB) == []  # --nokeep: deleted at QUIT

            empty = await asyncio.to_thread(fetchmail, inst, tmp_path / "fm", keep=False)
            assert empty.code == 1, empty.output  # 1: no mail

    asyncio.run(scenario())
