"""`mailprime serve` as an IMAP server: the process an operator runs, with its configuration file,
two IMAP listeners (STARTTLS and implicit TLS) and an MX, on ephemeral loopback ports, TLS from
the test CA. The other `test_imap_*` end-to-end modules start theirs with `running_imap_server`
(one process per module); the tests below check the wiring itself.
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
import trustme

from mailprime.config import load_settings
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import open_store
from tests.support.instance import free_port, running_instance, submit
from tests.support.serve import serving

pytestmark = pytest.mark.slow

ALICE = "alice@a.test"
BOB = "bob@a.test"
PASSWORDS = {ALICE: "alice-imap-secret", BOB: "bob-imap-secret"}
TIMEOUT = 10.0  # every client socket operation; none is expected to come close
QUOTA = 30 * 1024 * 1024
MAX_SIZE = 40 * 1024 * 1024


@dataclass
class ImapServer:
    root: Path
    config: Path
    ca: trustme.CA
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]

    def tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def starttls_client(self, user: str | None = ALICE) -> imaplib.IMAP4:
        """imaplib on the STARTTLS port, TLS started (and logged in as `user`)."""
        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=TIMEOUT)
        client.starttls(ssl_context=self.tls())
        if user is not None:
            client.login(user, PASSWORDS[user])
        return client

    def implicit_client(self, user: str | None = ALICE) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls(),
                                   timeout=TIMEOUT)
        if user is not None:
            client.login(user, PASSWORDS[user])
        return client

    def deliver(self, to: str, message: bytes, sender: str = "someone@elsewhere.test") -> None:
        """One message over SMTP into the MX (plain: the MX listener here has no TLS)."""
        with smtplib.SMTP("127.0.0.1", self.ports["mx"], timeout=TIMEOUT) as smtp:
            smtp.ehlo("client.test")
            smtp.sendmail(sender, [to], message)

    def stored(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """What storage holds in `address`'s mailbox, in UID order (read by this process)."""
        settings = load_settings(self.config, environ={})

        async def read() -> list[bytes]:
            store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                                     inline_max=settings.storage.inline_max)
            try:
                account = await store.get_account(address)
                assert account is not None
                messages = sorted(await store.list_messages(account.id, mailbox), key=lambda m: m.uid)
                return [await store.read_blob(m.blob_id) for m in messages]
            finally:
                await store.close()

        return asyncio.run(read())


def write_config(root: Path, ca: trustme.CA) -> tuple[Path, dict[str, int]]:
    root.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("mail.a.test", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    ports = {"mx": free_port(), "imap": free_port(), "imaps": free_port()}
    doc = {
        "server": {"hostname": "mail.a.test", "data_dir": "."},
        "listeners": [
            {"name": "mx", "role": "mx", "address": "127.0.0.1", "port": ports["mx"], "tls": "none"},
            {"name": "imap", "role": "imap", "address": "127.0.0.1", "port": ports["imap"],
             "tls": "starttls"},
            {"name": "imaps", "role": "imap", "address": "127.0.0.1", "port": ports["imaps"],
             "tls": "implicit"},
        ],
        "tls": {"cert": str(root / "cert.pem"), "key": str(root / "key.pem")},
        "limits": {"max_message_size": MAX_SIZE},
        "imap": {"quota_bytes": QUOTA, "auth_failure_delay": 0.05, "idle_poll": 0.5},
        "delivery": {"poll_interval": 0.5},
    }
    config = root / "mailprime.toml"
    config.write_text(tomli_w.dumps(doc))
    return config, ports


async def _provision(config: Path) -> None:
    settings = load_settings(config, environ={})
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        await store.add_domain("a.test")
        for address, password in PASSWORDS.items():
            await store.add_account(address, hash_password(password))
    finally:
        await store.close()


@contextmanager
def running_imap_server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ImapServer]:
    """A provisioned `mailprime serve` process for one test module (see the module docstring)."""
    root = tmp_path_factory.mktemp("imap")
    config, ports = write_config(root, ca)
    asyncio.run(_provision(config))
    with serving(config, {"MAILPRIME_LOG_LEVEL": "INFO"}) as proc:
        yield ImapServer(root, config, ca, ports, proc)


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[ImapServer]:
    with running_imap_server(tmp_path_factory, ca) as server:
        yield server


def message(subject: str, body: str = "Hello.\r\n", sender: str = "someone@elsewhere.test",
            to: str = ALICE) -> bytes:
    return (f"From: Someone <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n\r\n{body}").encode()


# The wiring ----------------------------------------------------------------------------------


def test_both_listeners_greet_with_both_revisions(imap_server: ImapServer) -> None:
    with imap_server.starttls_client(user=None) as plain:
        assert plain.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    with imap_server.implicit_client(user=None) as implicit:
        caps = implicit.capabilities
        assert {"IMAP4REV1", "IMAP4REV2", "AUTH=PLAIN", "SASL-IR"} <= set(caps)
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps


def test_login_is_disabled_before_starttls(imap_server: ImapServer) -> None:
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"], timeout=TIMEOUT)
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        assert "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(ALICE, PASSWORDS[ALICE])
        client.starttls(ssl_context=imap_server.tls())
        typ, caps = client.capability()
        assert typ == "OK" and b"LOGINDISABLED" not in caps[0] and b"AUTH=PLAIN" in caps[0]
        typ, _ = client.login(ALICE, PASSWORDS[ALICE])
        assert typ == "OK"
        typ, caps = client.capability()
        assert b"MOVE" in caps[0] and b"CONDSTORE" in caps[0] and b"QUOTA" in caps[0]
    finally:
        client.logout()


def test_wrong_password_is_refused_then_the_connection_closed(imap_server: ImapServer) -> None:
    with imap_server.starttls_client(user=None) as client:
        for _ in range(2):
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login(ALICE, "wrong")
        # The third failure ends the session (max_auth_failures = 3 by default).
        with pytest.raises((imaplib.IMAP4.error, imaplib.IMAP4.abort)):
            client.login(ALICE, "wrong")
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()


def test_the_in_process_instance_serves_imap_too(tmp_path: Path, ca: trustme.CA) -> None:
    """`running_instance` (the helper most end-to-end tests use) has IMAP listeners as well."""

    async def scenario() -> None:
        async with running_instance(tmp_path, ca, domain="a.test", hostname="mail.a.test",
                                    accounts=dict(PASSWORDS)) as inst:
            original = message("submitted", to=BOB)
            await submit(inst, ALICE, ALICE, [BOB], original)
            [(_, stored)] = await inst.wait_mailbox(BOB, 1)

            def read() -> bytes:
                with imaplib.IMAP4_SSL("127.0.0.1", inst.port("imaps"), ssl_context=inst.client_tls(),
                                       timeout=TIMEOUT) as client:
                    client.login(BOB, PASSWORDS[BOB])
                    client.select("INBOX", readonly=True)
                    _, data = client.fetch("1", "(BODY.PEEK[])")
                    first = data[0]
                    assert isinstance(first, tuple)
                    return bytes(first[1])

            fetched = await asyncio.to_thread(read)
            assert fetched == stored and fetched.endswith(original)

    asyncio.run(scenario())
