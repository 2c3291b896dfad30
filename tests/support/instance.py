"""Real mailprime instances for end-to-end tests: a data directory, a database, a TLS
certificate from a trustme CA, listeners on free loopback ports, started in this event loop.

Also the small helpers the end-to-end tests share: submitting with smtplib (in a thread, so the
instance keeps serving on the loop), waiting for an asynchronous outcome by polling the store
with a deadline, and reading a mailbox back.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import errno
import smtplib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trustme

from mailprime.config import (
    DeliverySettings,
    DnsSettings,
    HttpSettings,
    ListenerSettings,
    Pop3Settings,
    Role,
    ServerSettings,
    Settings,
    StorageSettings,
    SubmissionSettings,
    TlsMode,
    TlsSettings,
)
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import Event, EventKind, QueueRecipient, StoredMessage
from mailprime.runtime import Server, start_server
from mailprime.services.passwords import hash_password
from mailprime.storage.sql import open_store

T = TypeVar("T")

# How long a test waits for an asynchronous outcome (a delivery, a bounce) before failing.
DEFAULT_DEADLINE = 20.0


# Ports free_port has handed out in this test process. The socket that found a port is closed
# before the caller binds it, so the kernel may offer the same port again to the next call: a
# test that asks for several (a server's listeners) could then get one twice, and the server
# would fail to bind its second listener (seen once in CI). Never handing out a port twice rules
# that out; the ~28,000 ephemeral ports are far more than a test run asks for.
_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else gets it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@dataclass
class Instance:
    server: Server
    settings: Settings
    ca: trustme.CA
    accounts: dict[str, str]  # address -> password
    domain: str = ""

    def port(self, name: str) -> int:
        return self.server.ports[name]

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    @property
    def hostname(self) -> str:
        return self.settings.server.hostname

    # Reading the store back -----------------------------------------------------------------

    async def mailbox(self, address: str, name: str = "INBOX") -> list[tuple[StoredMessage, bytes]]:
        """Every message in `address`'s mailbox `name`, in UID order, with its content."""
        store = self.server.store
        account = await store.get_account(address)
        assert account is not None, f"no account {address}"
        messages = sorted(await store.list_messages(account.id, name), key=lambda m: m.uid)
        return [(m, await store.read_blob(m.blob_id)) for m in messages]

    async def wait_mailbox(self, address: str, count: int, name: str = "INBOX",
                           deadline: float = DEFAULT_DEADLINE) -> list[tuple[StoredMessage, bytes]]:
        """Waits until `address`'s mailbox holds at least `count` messages."""

        async def enough() -> list[tuple[StoredMessage, bytes]] | None:
            got = await self.mailbox(address, name)
            return got if len(got) >= count else None

        return await wait_for(enough, deadline, f"{count} message(s) in {address}/{name}")

    async def events(self, queue_id: str | None = None) -> list[Event]:
        return list(await self.server.store.list_events(
            QueueId(queue_id) if queue_id is not None else None))

    async def recipients(self, queue_id: str) -> list[QueueRecipient]:
        return list(await self.server.store.get_recipients(QueueId(queue_id)))

    async def wait_events(self, queue_id: str, kinds: Sequence[EventKind], count: int = 1,
                          deadline: float = DEFAULT_DEADLINE) -> list[Event]:
        """Waits until `queue_id` has at least `count` events whose kind is in `kinds`; returns
        all its events."""

        async def seen() -> list[Event] | None:
            evs = await self.events(queue_id)
            return evs if sum(e.kind in kinds for e in evs) >= count else None

        return await wait_for(seen, deadline, f"{count} {'/'.join(kinds)} event(s) of {queue_id}")


async def wait_for(check: Callable[[], Awaitable[T | None]], deadline: float = DEFAULT_DEADLINE,
                   what: str = "condition") -> T:
    """Polls `check` until it returns something other than None, for at most `deadline` seconds.

    Polling (with a short sleep) is only for waiting on an asynchronous outcome the system
    produces on its own, such as a delivery by the worker; never for ordering test steps."""
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {deadline} s waiting for {what}")
        await asyncio.sleep(0.05)


# Settings and start-up --------------------------------------------------------------------

def make_settings(tmp: Path, ca: trustme.CA, *, hostname: str, nameservers: list[str] | None = None,
                  mx_port: int = 25, sandbox: bool = False, storage_url: str = "",
                  max_queue_lifetime: int = 5 * 86400, retry_first: int = 1,
                  sender_policy: str = "own", pop3: Pop3Settings | None = None,
                  http: bool = False) -> Settings:
    tmp.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(hostname, "localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with open(tmp / "cert.pem", "ab") as fh:
            fh.write(extra.bytes())
    return Settings(
        server=ServerSettings(hostname=hostname, data_dir=str(tmp)),
        storage=StorageSettings(url=storage_url),
        listeners=[
            ListenerSettings(name="mx", role=Role.MX, port=free_port(), tls=TlsMode.STARTTLS),
            ListenerSettings(name="submission", role=Role.SUBMISSION, port=free_port(),
                             tls=TlsMode.STARTTLS),
            ListenerSettings(name="submissions", role=Role.SUBMISSION, port=free_port(),
                             tls=TlsMode.IMPLICIT),
            ListenerSettings(name="pop3", role=Role.POP3, port=free_port(), tls=TlsMode.STARTTLS),
            ListenerSettings(name="pop3s", role=Role.POP3, port=free_port(), tls=TlsMode.IMPLICIT),
            ListenerSettings(name="imap", role=Role.IMAP, port=free_port(), tls=TlsMode.STARTTLS),
            ListenerSettings(name="imaps", role=Role.IMAP, port=free_port(), tls=TlsMode.IMPLICIT),
        ],
        tls=TlsSettings(cert=str(tmp / "cert.pem"), key=str(tmp / "key.pem")),
        dns=DnsSettings(nameservers=nameservers or [], timeout=2.0),
        # Short retry intervals and a fast poll keep the end-to-end tests quick.
        delivery=DeliverySettings(mx_port=mx_port, sandbox=sandbox, retry_first=retry_first,
                                  retry_max_interval=max(2, retry_first),
                                  max_queue_lifetime=max_queue_lifetime, poll_interval=0.2,
                                  connect_timeout=3.0, command_timeout=10.0),
        submission=SubmissionSettings(sender_policy=sender_policy),
        pop3=pop3 or Pop3Settings(),
        # With `http`, the HTTP API too, on its own free port: `Instance.port("http")`.
        http=HttpSettings(enabled=http, port=free_port() if http else 0),
        config_path=str(tmp / "mailprime.toml"),
    )


@dataclass(frozen=True)
class Provisioning:
    domain: str
    accounts: dict[str, str]
    aliases: tuple[tuple[str, str], ...] = ()
    extra_domains: tuple[str, ...] = ()


async def provision(settings: Settings, what: Provisioning) -> None:
    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max)
    try:
        for domain in (what.domain, *what.extra_domains):
            await store.add_domain(domain)
        for address, password in what.accounts.items():
            await store.add_account(address, hash_password(password))
        for source, destination in what.aliases:
            await store.add_alias(source, destination)
    finally:
        await store.close()


@asynccontextmanager
async def running_instance(tmp: Path, ca: trustme.CA, *, domain: str, hostname: str,
                           accounts: dict[str, str], aliases: Sequence[tuple[str, str]] = (),
                           extra_domains: Sequence[str] = (),
                           **kwargs: object) -> AsyncIterator[Instance]:
    """Provisions `domain` (and `extra_domains`) with `accounts` (address -> password) and
    `aliases` (source -> destination), starts the instance, and stops it (gracefully) on exit.
    `kwargs` go to `make_settings`."""
    settings = make_settings(tmp, ca, hostname=hostname, **kwargs)  # type: ignore[arg-type]
    await provision(settings, Provisioning(domain, accounts, tuple(aliases), tuple(extra_domains)))
    server = await _start_with_free_ports(settings)
    try:
        yield Instance(server, settings, ca, accounts, domain)
    finally:
        await server.stop(grace=2.0)


async def _start_with_free_ports(settings: Settings, attempts: int = 3) -> Server:
    """`free_port` only finds a port that was free a moment ago: another process on the machine
    (a parallel test run, a peer) may take it before the server binds. Then new ports are
    picked and the start tried again, a bounded number of times."""
    for attempt in range(attempts):
        try:
            return await start_server(settings)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            for listener in settings.listeners:
                listener.port = free_port()
            if settings.http.enabled:
                settings.http.port = free_port()
    raise AssertionError("unreachable")


# Clients ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmtpResult:
    """What smtplib saw: the final reply to the message, and the recipients it refused."""

    code: int
    text: str
    refused: dict[str, tuple[int, bytes]]

    @property
    def queue_id(self) -> str:
        """The id in "250 2.0.0 Ok: queued as <ID>"."""
        marker = "queued as "
        assert marker in self.text, self.text
        return self.text.split(marker, 1)[1].split()[0]


@contextmanager
def smtp_client(inst: Instance, listener: str = "submission", *, tls: bool = True,
                user: str | None = None) -> Iterator[smtplib.SMTP]:
    """Blocking: an smtplib client connected to `listener`, after EHLO (and STARTTLS, or implicit
    TLS on "submissions", and AUTH as `user` when given). Use it inside asyncio.to_thread."""
    implicit = listener == "submissions"
    client = (smtplib.SMTP_SSL("127.0.0.1", inst.port(listener), context=inst.client_tls(),
                               timeout=10) if implicit
              else smtplib.SMTP("127.0.0.1", inst.port(listener), timeout=10))
    with client:
        client.ehlo("client.test")
        if tls and not implicit:
            client.starttls(context=inst.client_tls())
            client.ehlo("client.test")
        if user is not None:
            client.login(user, inst.accounts[user])
        yield client


async def submit(inst: Instance, user: str, sender: str, recipients: Sequence[str], message: bytes,
                 *, listener: str = "submission") -> SmtpResult:
    """Submits with AUTH (STARTTLS on "submission", implicit TLS on "submissions"), trusting the
    instance's CA; returns the reply to the message."""
    return await asyncio.to_thread(
        smtp_send, "127.0.0.1", inst.port(listener), ctx=inst.client_tls(), sender=sender,
        recipients=recipients, message=message, user=user, password=inst.accounts[user],
        implicit_tls=listener == "submissions")


def smtp_send(host: str, port: int, *, ctx: ssl.SSLContext, sender: str, recipients: Sequence[str],
              message: bytes, user: str | None = None, password: str | None = None,
              implicit_tls: bool = False, starttls: bool = True) -> SmtpResult:
    """Blocking (run it with asyncio.to_thread): one message through smtplib, step by step so
    that the reply to DATA (which carries the queue id) is kept; `sendmail` discards it.

    Raises smtplib's SMTPSenderRefused / SMTPRecipientsRefused / SMTPDataError like sendmail."""
    client: smtplib.SMTP
    if implicit_tls:
        client = smtplib.SMTP_SSL(host, port, context=ctx, timeout=10)
    else:
        client = smtplib.SMTP(host, port, timeout=10)
    with client:
        client.ehlo("client.test")
        if starttls and not implicit_tls:
            client.starttls(context=ctx)
            client.ehlo("client.test")
        if user is not None:
            assert password is not None
            client.login(user, password)
        code, resp = client.mail(sender)
        if code != 250:
            client.rset()
            raise smtplib.SMTPSenderRefused(code, resp, sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in recipients:
            rcode, rresp = client.rcpt(rcpt)
            if rcode not in (250, 251):
                refused[rcpt] = (rcode, rresp)
        if len(refused) == len(recipients):
            client.rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        code, resp = client.data(message)
        if code != 250:
            client.rset()
            raise smtplib.SMTPDataError(code, resp)
    return SmtpResult(code, resp.decode("utf-8", "replace"), refused)


def parse(content: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


@dataclass(frozen=True)
class Dsn:
    """An RFC 3464 report taken apart: the message, its three parts, and the status fields."""

    message: email.message.EmailMessage
    parts: list[email.message.EmailMessage]
    per_message: email.message.Message
    per_recipient: list[email.message.Message]


def parse_dsn(content: bytes) -> Dsn:
    msg = parse(content)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = [p for p in msg.iter_parts() if isinstance(p, email.message.EmailMessage)]
    status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
    payload = status.get_payload()  # RFC 3464 2.1: per-message fields, then one block per rcpt
    assert isinstance(payload, list)
    blocks = [b for b in payload if isinstance(b, email.message.Message)]
    assert len(blocks) == len(payload) >= 2
    return Dsn(msg, parts, blocks[0], blocks[1:])


def dsn_field(block: email.message.Message, name: str) -> str:
    """A status field unfolded to one line ("" when absent)."""
    value = block[name]
    return " ".join(str(value).split()) if value is not None else ""


def simple_message(sender: str, to: str, subject: str, body: str = "Hello.\r\n",
                   *, extra_headers: str = "") -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n{extra_headers}"
            f"\r\n{body}").encode()
