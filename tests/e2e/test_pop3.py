"""POP3 end to end: a real instance (real SQLite, real sockets, trustme TLS), mail delivered to
it with smtplib through submission, then read back with Python's poplib over STLS and over
implicit TLS, with USER/PASS and AUTH PLAIN: content byte for byte as stored (the submitted
message under the trace header mailprime adds), unique ids stable across sessions, DELE+QUIT
deleting and DELE+RSET / DELE+dropped connection not, sessions side by side on one mailbox, a
message expunged meanwhile, and the login refusals."""

from __future__ import annotations

import asyncio
import base64
import poplib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from mailprime.config import Pop3Settings, Role, TlsMode, load_settings
from mailprime.domain.errors import ConfigError
from tests.support.instance import Instance, running_instance, submit

pytestmark = pytest.mark.slow

ALICE = "alice@a.test"
BOB = "bob@a.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
WAIT = 20.0


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n\r\n").encode() + body


DOTTED = message("dots", b".leading dot\r\n..two\r\n.\r\nend\r\n")
BIG = message("big", b"".join(b"line %07d of a message that goes to the spool\r\n" % i
                              for i in range(40_000)))  # ~2 MB: beyond the 1 MiB inline limit


def run_with_instance(tmp: Path, ca: trustme.CA, body: Callable[[Instance], Awaitable[None]],
                      *, pop3: Pop3Settings | None = None) -> None:
    async def scenario() -> None:
        async with running_instance(tmp / "a", ca, domain="a.test", hostname="mail.a.test",
                                    accounts=dict(PASSWORDS), pop3=pop3) as inst:
            async with asyncio.timeout(120):
                await body(inst)

    asyncio.run(scenario())


async def deliver(inst: Instance, *messages: bytes) -> list[bytes]:
    """Submits each message to bob; returns what the mailbox holds, in UID order."""
    for msg in messages:
        await submit(inst, ALICE, ALICE, [BOB], msg)
    stored = await inst.wait_mailbox(BOB, len(messages))
    return [content for _, content in stored]


def pop3_stls(inst: Instance, *, login: bool = True) -> poplib.POP3:
    """Blocking: poplib on the STLS port, upgraded to TLS (trusting the test CA), logged in."""
    pop = poplib.POP3("127.0.0.1", inst.port("pop3"), timeout=WAIT)
    pop.stls(context=inst.client_tls())
    if login:
        pop.user(BOB)
        pop.pass_(PASSWORDS[BOB])
    return pop


def pop3_implicit(inst: Instance) -> poplib.POP3_SSL:
    """Blocking: poplib on the implicit-TLS port, logged in with AUTH PLAIN."""
    pop = poplib.POP3_SSL("127.0.0.1", inst.port("pop3s"), context=inst.client_tls(), timeout=WAIT)
    token = base64.b64encode(f"\0{BOB}\0{PASSWORDS[BOB]}".encode()).decode()
    assert pop._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    return pop


def joined(lines: list[bytes]) -> bytes:
    """poplib's RETR lines (un-stuffed, without line ends) back into the message."""
    return b"".join(line + b"\r\n" for line in lines)


def test_stls_user_pass_retrieves_exactly_what_was_stored(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        stored = await deliver(inst, DOTTED, BIG)

        def client() -> tuple[tuple[int, int], list[bytes], list[bytes], list[bytes]]:
            pop = pop3_stls(inst)
            try:
                stat = pop.stat()
                listing = pop.list()[1]
                first = joined(pop.retr(1)[1])
                second = joined(pop.retr(2)[1])
                return stat, listing, [first, second], pop.top(1, 1)[1]
            finally:
                pop.quit()

        stat, listing, retrieved, top = await asyncio.to_thread(client)
        assert retrieved == stored
        for original, content in zip((DOTTED, BIG), retrieved, strict=True):
            assert content.startswith(b"Received: from client.test")  # the trace header added
            assert content.endswith(original)
        assert stat == (2, sum(map(len, stored)))
        assert listing == [b"1 %d" % len(stored[0]), b"2 %d" % len(stored[1])]
        head, _, rest = stored[0].partition(b"\r\n\r\n")
        assert joined(top) == head + b"\r\n\r\n" + rest.split(b"\r\n")[0] + b"\r\n"
        # Read in full and kept: now \Seen for IMAP too.
        assert all("\\Seen" in m.flags for m, _ in await inst.mailbox(BOB))

    run_with_instance(tmp_path, ca, body)


def test_implicit_tls_auth_plain_and_uidl_stable_across_sessions(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        await deliver(inst, message("one"), message("two"))

        def uidls() -> list[bytes]:
            pop = pop3_implicit(inst)
            try:
                return list(pop.uidl()[1])
            finally:
                pop.quit()

        first = await asyncio.to_thread(uidls)
        second = await asyncio.to_thread(uidls)
        account = await inst.server.store.get_account(BOB)
        assert account is not None
        inbox = await inst.server.store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        assert first == second == [b"1 %d.1" % inbox.uidvalidity, b"2 %d.2" % inbox.uidvalidity]
        await deliver(inst, message("three"))  # (waits for 3 messages)
        third = await asyncio.to_thread(uidls)
        assert third[:2] == first and third[2] == b"3 %d.3" % inbox.uidvalidity

    run_with_instance(tmp_path, ca, body)


def test_dele_quit_deletes_but_rset_and_a_dropped_connection_do_not(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        await deliver(inst, message("one"), message("two"), message("three"))

        def rset_then_quit() -> None:
            pop = pop3_stls(inst)
            pop.dele(1)
            pop.dele(2)
            pop.rset()
            pop.quit()

        def drop() -> None:
            pop = pop3_stls(inst)
            pop.dele(1)
            pop.close()  # no QUIT: the session never reaches UPDATE

        def count() -> int:
            pop = pop3_stls(inst)
            try:
                return int(pop.stat()[0])
            finally:
                pop.quit()

        def dele_quit() -> bytes:
            pop = pop3_stls(inst)
            pop.dele(2)
            return pop.quit()

        await asyncio.to_thread(rset_then_quit)
        assert len(await inst.mailbox(BOB)) == 3
        await asyncio.to_thread(drop)
        # A new session sees every message: the dropped one deleted nothing (RFC 1939 6).
        assert await asyncio.to_thread(count) == 3
        assert await asyncio.to_thread(dele_quit) == (
            b"+OK mail.a.test POP3 server signing off (2 messages left)")
        subjects = [content.split(b"Subject: ")[1].split(b"\r\n")[0] for _, content in
                    await inst.mailbox(BOB)]
        assert subjects == [b"one", b"three"]

    run_with_instance(tmp_path, ca, body)


def test_sessions_side_by_side_and_a_message_expunged_meanwhile(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        stored = await deliver(inst, message("one"), message("two"), message("three"))
        first = await asyncio.to_thread(pop3_stls, inst)
        second = await asyncio.to_thread(pop3_implicit, inst)  # no [IN-USE]: both are in
        try:
            assert await asyncio.to_thread(first.stat) == await asyncio.to_thread(second.stat)
            # Another session (an IMAP EXPUNGE, here through the store) removes message 3.
            account = await inst.server.store.get_account(BOB)
            assert account is not None
            inbox = await inst.server.store.get_mailbox(account.id, "INBOX")
            assert inbox is not None
            assert await inst.server.store.expunge(inbox.id, [3], only_deleted=False) == [3]
            with pytest.raises(poplib.error_proto, match="Message was removed by another session"):
                await asyncio.to_thread(first.retr, 3)
            assert joined((await asyncio.to_thread(second.retr, 1))[1]) == stored[0]
            await asyncio.to_thread(first.dele, 1)
            await asyncio.to_thread(second.dele, 1)
            await asyncio.to_thread(second.dele, 2)
            assert (await asyncio.to_thread(first.quit)).startswith(b"+OK")
            assert (await asyncio.to_thread(second.quit)).startswith(b"+OK")
        finally:
            for pop in (first, second):
                pop.close()
        assert await inst.mailbox(BOB) == []

    run_with_instance(tmp_path, ca, body)


def test_retrieval_in_any_order_around_dele_and_rset(tmp_path: Path, ca: trustme.CA) -> None:
    """The server reads the next messages' content ahead: whatever the order of RETR and TOP,
    around DELE and RSET, over inline and spooled messages, each comes back as stored."""
    async def body(inst: Instance) -> None:
        originals = [DOTTED if i % 5 == 0 else message(f"m{i}", (b"x" * 70 + b"\r\n") * i)
                     for i in range(30)]
        originals[7] = BIG
        stored = await deliver(inst, *originals)

        def client() -> tuple[bytes, list[bytes], bytes]:
            pop = pop3_stls(inst)
            try:
                pop.dele(2)
                with pytest.raises(poplib.error_proto, match="already deleted"):
                    pop.retr(2)
                first = [joined(pop.retr(n)[1]) for n in (1, 3, 4)]
                top = b"".join(pop.top(9, 0)[1])
                pop.rset()
                every = [joined(pop.retr(n)[1]) for n in range(30, 0, -1)]
                return top, first + every[::-1], pop.quit()
            finally:
                pop.close()

        top, retrieved, bye = await asyncio.to_thread(client)
        assert retrieved == [stored[0], stored[2], stored[3], *stored]
        assert top == stored[8].split(b"\r\n\r\n")[0].replace(b"\r\n", b"")
        assert bye.startswith(b"+OK") and len(await inst.mailbox(BOB)) == 30

    run_with_instance(tmp_path, ca, body)


def test_login_refusals(tmp_path: Path, ca: trustme.CA) -> None:
    async def body(inst: Instance) -> None:
        def plaintext() -> tuple[dict[str, list[str]], str]:
            pop = poplib.POP3("127.0.0.1", inst.port("pop3"), timeout=WAIT)
            try:
                capa = pop.capa()
                with pytest.raises(poplib.error_proto) as refused:
                    pop.user(BOB)
                return capa, str(refused.value)
            finally:
                pop.quit()

        def wrong_passwords() -> tuple[list[str], bytes]:
            pop = pop3_stls(inst, login=False)
            errors = []
            for attempt in range(3):
                pop.user(BOB)
                with pytest.raises(poplib.error_proto) as refused:
                    pop.pass_(f"wrong-{attempt}")
                errors.append(str(refused.value))
            rest = pop.sock.recv(100)  # the server closed after the third failure
            pop.close()
            return errors, rest

        capa, refusal = await asyncio.to_thread(plaintext)
        assert "STLS" in capa and "USER" not in capa and "SASL" not in capa
        assert "[AUTH] Plaintext authentication disallowed" in refusal
        errors, rest = await asyncio.to_thread(wrong_passwords)
        assert errors == ["b'-ERR [AUTH] Authentication failed'"] * 3
        assert rest == b""

    run_with_instance(tmp_path, ca, body, pop3=Pop3Settings(auth_failure_delay=0.01))


def test_pop3_over_tls_refuses_an_untrusted_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    """The listeners present the instance's certificate; a client with another CA refuses it."""
    async def body(inst: Instance) -> None:
        other = ssl.create_default_context()
        trustme.CA().configure_trust(other)

        def connect() -> None:
            poplib.POP3_SSL("127.0.0.1", inst.port("pop3s"), context=other, timeout=WAIT)

        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(connect)

    run_with_instance(tmp_path, ca, body)


def test_pop3_settings_are_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "mailprime.toml"
    config.write_text('[pop3]\nidle_timeout = 900\nauth_failure_delay = 0.5\n\n'
                      '[[listeners]]\nname = "pop3s"\nrole = "pop3"\nport = 995\ntls = "implicit"\n')
    settings = load_settings(config, environ={"MAILPRIME_POP3_MAX_AUTH_FAILURES": "5"})
    assert (settings.pop3.idle_timeout, settings.pop3.auth_failure_delay,
            settings.pop3.max_auth_failures) == (900, 0.5, 5)
    assert [(lst.role, lst.tls, lst.port) for lst in settings.listeners] == [
        (Role.POP3, TlsMode.IMPLICIT, 995)]
    config.write_text("[pop3]\nidle_timeout = 60\n")
    with pytest.raises(ConfigError, match=r"RFC 1939 3 requires at least 600"):
        load_settings(config, environ={})
