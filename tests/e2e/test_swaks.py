"""swaks, the standard command-line SMTP test client, against a real instance: STARTTLS and
implicit TLS (certificate verified against the test CA), AUTH PLAIN and LOGIN, and the refusals
(no AUTH before TLS, a wrong password).

swaks runs as a subprocess in a thread (`asyncio.to_thread`) while the instance serves on the
test's event loop. Skipped with a message when swaks is not installed (Debian package swaks).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import smtplib
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from tests.support.instance import Instance, parse, running_instance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("swaks") is None,
                       reason="swaks not installed (Debian: apt-get install swaks)"),
]

ALICE = "alice@a.test"
BOB = "bob@a.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}


async def swaks(inst: Instance, ca_file: Path, *args: str,
                password: str = PASSWORDS[ALICE]) -> subprocess.CompletedProcess[str]:
    """One swaks run from alice to bob; `args` choose the port, TLS and AUTH."""
    command = ["swaks", "--server", "127.0.0.1", "--helo", "client.test",
               "--from", ALICE, "--to", BOB,
               "--tls-verify", "--tls-ca-path", str(ca_file),
               "--auth-user", ALICE, "--auth-password", password, *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                   timeout=30, check=False)


def _queued(output: str) -> str:
    marker = "250 2.0.0 Ok: queued as "
    assert marker in output, output
    return output.split(marker, 1)[1].split()[0]


def run_with_instance(tmp: Path, ca: trustme.CA,
                      body: Callable[[Instance, Path], Awaitable[None]]) -> None:
    async def scenario() -> None:
        ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        async with running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts=dict(PASSWORDS)) as inst:
            await body(inst, ca_file)

    asyncio.run(scenario())


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_and_auth_on_submission(tmp_path: Path, ca: trustme.CA, mechanism: str) -> None:
    async def body(inst: Instance, ca_file: Path) -> None:
        done = await swaks(inst, ca_file, "--port", str(inst.port("submission")), "--tls",
                           "--auth", mechanism)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "<-  220 2.0.0 Ready to start TLS" in out
        assert f" ~> AUTH {mechanism}" in out  # "~": sent inside TLS
        assert "<~  235 2.7.0 Authentication successful" in out
        queue_id = _queued(out)
        ((stored, content),) = await inst.wait_mailbox(BOB, 1)
        assert stored.uid == 1
        top = str((parse(content).get_all("Received") or [""])[0])
        assert f"id {queue_id}" in top and "with ESMTPSA" in top

    run_with_instance(tmp_path, ca, body)


def test_implicit_tls_on_submissions(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance, ca_file: Path) -> None:
        done = await swaks(inst, ca_file, "--port", str(inst.port("submissions")), "--tlsc",
                           "--auth", "PLAIN")
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        # TLS comes before the greeting (RFC 8314 3.3), so STARTTLS is neither offered nor used.
        assert out.index("=== TLS started") < out.index("<~  220 mail.a.test")
        assert "STARTTLS" not in out
        assert "<~  235 2.7.0 Authentication successful" in out
        _queued(out)
        await inst.wait_mailbox(BOB, 1)

    run_with_instance(tmp_path, ca, body)


def test_auth_is_refused_before_tls(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance, ca_file: Path) -> None:
        port = inst.port("submission")
        done = await swaks(inst, ca_file, "--port", str(port), "--auth", "PLAIN")
        # RFC 4954 4 / RFC 8314: no password mechanism is offered in the clear.
        assert done.returncode == 28, done.stdout + done.stderr  # swaks: "error in AUTH"
        assert "250-AUTH" not in done.stdout and "250 AUTH" not in done.stdout
        assert "Host did not advertise authentication" in done.stdout + done.stderr

        # A client that sends AUTH anyway is refused, and the password is never checked.
        def force_auth() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.test")
                token = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
                return client.docmd("AUTH", f"PLAIN {token}")

        code, text = await asyncio.to_thread(force_auth)
        assert code in (530, 538), (code, text)  # 538 5.7.11: encryption required (RFC 4954 6)
        assert await inst.mailbox(BOB) == []

    run_with_instance(tmp_path, ca, body)


def test_wrong_password_gets_535(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance, ca_file: Path) -> None:
        done = await swaks(inst, ca_file, "--port", str(inst.port("submission")), "--tls",
                           "--auth", "PLAIN", password="not-the-password")
        assert done.returncode == 28, done.stdout + done.stderr
        assert "535 5.7.8 Authentication credentials invalid" in done.stdout
        assert "MAIL FROM" not in done.stdout
        assert await inst.mailbox(BOB) == []

    run_with_instance(tmp_path, ca, body)
