"""Failures inside a command, provoked for real (no mock of our code): the session answers the
command with a tagged NO and goes on taking commands.

* An unexpected failure (not one of the domain's errors): the process's thread pool refuses new
  work, as it does while the interpreter shuts down ("cannot schedule new futures after
  shutdown"). The password check and the parse of a large message run on that pool, so LOGIN
  and FETCH BODYSTRUCTURE fail with RuntimeError: NO [SERVERBUG], logged with its traceback.
* A storage failure: a message's spool file disappears from disk. Storage raises StorageError:
  NO [UNAVAILABLE] (RFC 5530), logged, no traceback needed.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailprime.proto.imap.types import Fetch, FetchItem, Login, Noop, SeqRange, SequenceSet, State
from mailprime.services.imap.content import PARSE_OFF_LOOP_BYTES
from mailprime.services.passwords import hash_password
from tests.services.test_imap_session_harness import BOB, MSG, env, run

BOB_PASSWORD = "bob-password"
ALL = SequenceSet((SeqRange(1, None),))
# Large enough to be parsed on a worker thread (content.PARSE_OFF_LOOP_BYTES) and to live in a
# spool file rather than in the database (the harness's inline_max is 64 KiB).
BIG = MSG + (b"y" * 78 + b"\r\n") * (PARSE_OFF_LOOP_BYTES // 80 + 10)


def test_an_unexpected_failure_is_serverbug_and_the_session_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        threads = ThreadPoolExecutor(max_workers=2)
        loop.set_default_executor(threads)  # ours, so that the test can shut it down
        async with env(tmp_path) as e:
            await e.deliver(BIG)
            await e.store.add_account(BOB, hash_password(BOB_PASSWORD))
            reader = e.client()
            await reader.login()
            await reader.select()
            newcomer = e.client()  # bob, whose password is not in the login cache yet

            threads.shutdown(wait=True)  # from now on, work handed to a thread fails
            with caplog.at_level(logging.ERROR, logger="mailprime.imapd"):
                fetched = await reader.text(Fetch(ALL, (FetchItem.BODYSTRUCTURE,)))
                login = await newcomer.text(Login(BOB, BOB_PASSWORD))
            session_id = reader.session.session_id
            assert fetched == (f"a3 NO [SERVERBUG] Internal server error (logged as session {session_id});"
                               " try again later\r\n")
            assert login.startswith("a1 NO [SERVERBUG] Internal server error (logged as session ")
            failures = [r for r in caplog.records if r.getMessage().endswith("command failed")]
            assert len(failures) == 2
            assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures)

            # Both sessions are intact: same state, and they answer the next command.
            assert reader.state is State.SELECTED and newcomer.state is State.NOT_AUTHENTICATED
            assert await reader.text(Noop()) == "a4 OK NOOP completed\r\n"
            assert await reader.text(Fetch(ALL, (FetchItem.FLAGS,))) == (
                "* 1 FETCH (FLAGS ())\r\na5 OK FETCH completed\r\n")
            assert await newcomer.text(Noop()) == "a2 OK NOOP completed\r\n"

            loop.set_default_executor(ThreadPoolExecutor(max_workers=2))  # the pool is back
            assert (await reader.text(Fetch(ALL, (FetchItem.BODYSTRUCTURE,)))).endswith(
                "a6 OK FETCH completed\r\n")
            assert (await newcomer.text(Login(BOB, BOB_PASSWORD))).startswith("a3 OK ")

    run(scenario())


def test_a_storage_failure_is_unavailable_and_the_session_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            await e.deliver(BIG)
            client = e.client()
            await client.login()
            await client.select()
            spooled = [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]
            assert len(spooled) == 1, spooled
            spooled[0].unlink()  # the disk lost the message's content
            with caplog.at_level(logging.ERROR, logger="mailprime.imapd"):
                assert await client.text(Fetch(ALL, (FetchItem.BODYSTRUCTURE,))) == (
                    "a3 NO [UNAVAILABLE] Storage temporarily unavailable; try again later\r\n")
            assert any("spool read failed" in r.getMessage() for r in caplog.records)
            assert client.state is State.SELECTED
            assert await client.text(Noop()) == "a4 OK NOOP completed\r\n"
            assert await client.text(Fetch(ALL, (FetchItem.UID,))) == (
                "* 1 FETCH (UID 1)\r\na5 OK FETCH completed\r\n")

    run(scenario())
