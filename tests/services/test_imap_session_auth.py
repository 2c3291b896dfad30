"""Logging in to the IMAP session: LOGIN and AUTHENTICATE PLAIN (SASL-IR and continuation),
refusals before TLS, wrong passwords (delay, then BYE), disabled accounts, the per-account
session cap, the capability lists per state, ENABLE, ID, and errors turned into tagged answers."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import create_engine, update

from mailprime.domain.login_failures import FailurePolicy
from mailprime.proto.imap.types import (
    Authenticate,
    AuthenticateData,
    Capability,
    Enable,
    Id,
    Login,
    Logout,
    Noop,
    Select,
    StartTls,
    State,
)
from mailprime.services.imap.auth import plain_credentials
from mailprime.storage.sql.schema import accounts
from tests.services.test_imap_session_harness import ALICE, PASSWORD, env, run, wire


def plain(user: str, password: str, authzid: str = "") -> bytes:
    return f"{authzid}\0{user}\0{password}".encode()


def test_login_then_capabilities_grow(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client()
            before = await client.text(Capability())
            assert before == \
                ("* CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN\r\n"
                              "a1 OK CAPABILITY completed\r\n")
            answer = await client.text(Login(ALICE, PASSWORD))
            assert answer.startswith("a2 OK [CAPABILITY IMAP4rev1 IMAP4rev2 ID ENABLE IDLE NAMESPACE "
                                     "UIDPLUS MOVE UNSELECT CHILDREN LIST-EXTENDED LIST-STATUS ")
            assert "APPENDLIMIT=10485760" in answer and "QUOTA=RES-STORAGE" in answer
            assert answer.endswith("] Logged in\r\n")
            assert client.state is State.AUTHENTICATED
            after = await client.text(Capability())
            assert "CONDSTORE" in after and "AUTH=PLAIN" not in after and "SASL-IR" not in after

    run(scenario())


def test_no_login_in_the_clear_unless_allowed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client(tls=False)
            assert "LOGINDISABLED STARTTLS" not in await client.text(Capability())
            assert await client.text(Login(ALICE, PASSWORD)) == \
                "a2 NO [PRIVACYREQUIRED] Log in after STARTTLS\r\n"
            assert await client.text(Authenticate("PLAIN", plain(ALICE, PASSWORD))) == \
                "a3 NO [PRIVACYREQUIRED] Log in after STARTTLS\r\n"
            assert client.state is State.NOT_AUTHENTICATED
            assert await client.text(StartTls()) == "a4 OK Begin TLS negotiation now\r\n"
            await client.session.on_tls()
            assert await client.text(StartTls()) == "a5 BAD TLS is already active\r\n"
            assert (await client.text(Login(ALICE, PASSWORD))).startswith("a6 OK ")
            loopback = e.client(tls=False, plaintext_login=True)
            assert "AUTH=PLAIN" in await loopback.text(Capability())
            assert (await loopback.text(Login(ALICE, PASSWORD))).startswith("a2 OK ")

    run(scenario())


def test_authenticate_plain_with_initial_response_and_with_continuation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first = e.client()
            answer = await first.text(Authenticate("PLAIN", plain(ALICE, PASSWORD)))
            assert answer.startswith("a1 OK [CAPABILITY")
            second = e.client()
            assert await second.text(Authenticate("PLAIN"), "t1") == "+ \r\n"
            answer = await wire(await second.events(AuthenticateData(plain(ALICE, PASSWORD))))
            assert answer.startswith("t1 OK [CAPABILITY") and second.state is State.AUTHENTICATED
            third = e.client()
            await third.run(Authenticate("PLAIN"), "t2")
            assert await wire(await third.events(AuthenticateData(None))) == \
                "t2 BAD Authentication cancelled\r\n"
            # The authorization identity may only name the user itself.
            fourth = e.client()
            proxy = plain(ALICE, PASSWORD, authzid="bob@example.com")
            refused = await fourth.text(Authenticate("PLAIN", proxy))
            assert refused.startswith("a1 NO [AUTHENTICATIONFAILED]")
            assert await fourth.text(Authenticate("LOGIN")) == \
                "a2 NO [CANNOT] Unsupported authentication mechanism\r\n"

    run(scenario())


def test_plain_credentials_decoding() -> None:
    creds = plain_credentials(b"\0alice\0secret")
    assert creds is not None and (creds.authzid, creds.authcid, creds.password) == ("", "alice", "secret")
    assert plain_credentials(b"alice\0secret") is None
    assert plain_credentials(b"") is None
    assert plain_credentials(b"\0\xff\0x") is None


def test_failed_logins_wait_longer_each_time_then_bye(tmp_path: Path) -> None:
    async def scenario() -> None:
        policy = FailurePolicy(first_delay=0.05, max_delay=0.1, max_failures=3)
        assert [policy.delay(n) for n in range(5)] == [0.0, 0.05, 0.1, 0.1, 0.1]
        async with env(tmp_path, failures=policy) as e:
            client = e.client()
            started = time.monotonic()
            assert await client.text(Login(ALICE, "wrong")) == \
                "a1 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
            assert await client.text(Login("nobody@example.com", "x")) == \
                "a2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
            assert time.monotonic() - started >= 0.15
            assert await client.text(Login(ALICE, "wrong")) == \
                ("a3 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
                                                                "* BYE Too many failed logins\r\n")
            assert client.state is State.LOGOUT

    run(scenario())


def test_disabled_account_cannot_log_in(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
            with engine.begin() as conn:
                conn.execute(update(accounts).values(disabled=True))
            engine.dispose()
            client = e.client()
            assert (await client.text(Login(ALICE, PASSWORD))).startswith("a1 NO [AUTHENTICATIONFAILED]")

    run(scenario())


def test_sessions_per_account_are_capped_and_released(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path, max_sessions=2) as e:
            clients = [e.client() for _ in range(3)]
            await clients[0].login()
            await clients[1].login()
            assert await clients[2].text(Login(ALICE, PASSWORD)) == \
                "a1 NO [LIMIT] Too many sessions for this account\r\n"
            await clients[0].session.on_close(0, 0)
            assert (await clients[2].text(Login(ALICE, PASSWORD))).startswith("a2 OK ")

    run(scenario())


def test_enable_and_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client()
            await client.login()
            assert await client.text(Enable(("CONDSTORE", "IMAP4REV2", "X-UNKNOWN"))) == \
                "* ENABLED CONDSTORE IMAP4rev2\r\na2 OK ENABLE completed\r\n"
            assert client.session.utf8
            assert await client.text(Enable(("CONDSTORE",))) == "* ENABLED\r\na3 OK ENABLE completed\r\n"
            # IMAP4rev2 drops RECENT and UNSEEN from SELECT and adds the mailbox's LIST line.
            selected = await client.text(Select("INBOX"))
            assert "RECENT" not in selected and '* LIST () "/" INBOX\r\n' in selected
            assert await client.text(Id((("name", "Thunderbird"), ("version", "115")))) == \
                '* ID ("name" "mailprime" "version" "0.1.0")\r\na5 OK ID completed\r\n'

    run(scenario())


def test_logout_and_storage_failures_become_tagged_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = e.client()
            await client.login()
            await client.select()
            await e.store.close()  # storage is gone: every command must still be answered
            assert await client.text(Select("Trash")) == (
                "* OK [CLOSED] Previous mailbox closed\r\n"
                "a3 NO [UNAVAILABLE] Storage temporarily unavailable; try again later\r\n")
            assert await client.text(Noop()) == "a4 OK NOOP completed\r\n"
            assert await client.text(Logout()) == "* BYE Logging out\r\na5 OK LOGOUT completed\r\n"
            assert client.state is State.LOGOUT

    run(scenario())


def test_a_second_login_is_answered_from_the_login_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            logins = e.service.resources.logins
            first, second = e.client(), e.client()
            await first.login()
            await second.ok(Authenticate("PLAIN", plain(ALICE, PASSWORD)))
            assert logins.hits == 1 and len(logins) == 1
            assert (await e.client().text(Login(ALICE, "not-it"))).startswith(
                "a1 NO [AUTHENTICATIONFAILED]")
            assert logins.hits == 1

    run(scenario())
