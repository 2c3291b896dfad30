"""Several sessions on one mailbox: each hears the others' APPEND, flag changes and EXPUNGE as
untagged responses when the RFC allows (never an EXPUNGE while answering FETCH, STORE or SEARCH,
RFC 3501 7.4.1), IDLE is woken at once, its own changes are not echoed back, and a selected
mailbox deleted by another session ends the session with BYE."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailprime.domain.mail import FlagMode
from mailprime.proto.imap.types import (
    BodySection,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    FetchItem,
    Idle,
    IdleDone,
    Noop,
    Rename,
    Search,
    SearchAll,
    SeqRange,
    SequenceSet,
    State,
    Store,
    StoreMode,
)
from tests.services.test_imap_session_harness import MSG, Client, Env, env, run, wire

ALL = SequenceSet((SeqRange(1, None),))


def one(n: int) -> SequenceSet:
    return SequenceSet((SeqRange(n, n),))


async def two_sessions(e: Env, messages: int = 3, mailbox: str = "INBOX") -> tuple[Client, Client]:
    for _ in range(messages):
        await e.deliver(MSG, mailbox)
    first, second = e.client(), e.client()
    for client in (first, second):
        await client.login()
        await client.select(mailbox)
    return first, second


def test_appends_and_flag_changes_of_others_are_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first, second = await two_sessions(e)
            assert await first.text(Noop()) == "a3 OK NOOP completed\r\n"
            await second.ok(Store(one(2), StoreMode.ADD, True, frozenset({"\\Answered", "$Later"})))
            await e.deliver()  # an SMTP delivery meanwhile
            assert await first.text(Noop()) == (
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)\r\n"
                "* 4 EXISTS\r\n* 0 RECENT\r\n"
                "* 2 FETCH (FLAGS ($Later \\Answered) UID 2)\r\n"
                "a4 OK NOOP completed\r\n")
            # The session's own changes are not echoed.
            await first.ok(Store(one(1), StoreMode.ADD, True, frozenset({"\\Seen"})))
            assert await first.text(Noop()) == "a6 OK NOOP completed\r\n"
            # With CONDSTORE on, the unsolicited FETCH carries MODSEQ (RFC 7162 3.2.4).
            await first.ok(Enable(("CONDSTORE",)))
            flagged = frozenset({"\\Flagged"})
            change = await e.store.store_flags(await e.inbox_id(), [3], FlagMode.ADD, flagged)
            modseq = change.changed[0].modseq
            assert await first.text(Noop()) == \
                f"* 3 FETCH (FLAGS (\\Flagged) UID 3 MODSEQ ({modseq}))\r\na8 OK NOOP completed\r\n"

    run(scenario())


def test_expunge_is_held_back_during_fetch_store_and_search(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first, second = await two_sessions(e, 4)
            await second.ok(Store(one(2), StoreMode.ADD, True, frozenset({"\\Deleted"})))
            await second.ok(Expunge())
            # Sequence numbers stay put: message 2 is still there for the first session.
            assert await first.text(Fetch(ALL, (FetchItem.UID,))) == (
                "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)\r\n"
                "a3 OK FETCH completed\r\n")
            assert await first.text(Search(SearchAll())) == "* SEARCH 1 2 3 4\r\na4 OK SEARCH completed\r\n"
            stored = await first.text(Store(one(4), StoreMode.ADD, False, frozenset({"\\Seen"})))
            assert stored == "* 4 FETCH (FLAGS (\\Seen))\r\na5 OK STORE completed\r\n"
            # Its content is gone: a FETCH of it says so (RFC 5530 EXPUNGEISSUED), nothing breaks.
            assert await first.text(Fetch(one(2), (BodySection(peek=True),))) == \
                "a6 OK [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n"
            # NOOP may tell, and then the numbers move.
            assert await first.text(Noop()) == "* 2 EXPUNGE\r\na7 OK NOOP completed\r\n"
            assert await first.text(Fetch(ALL, (FetchItem.UID,))) == (
                "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 4)\r\na8 OK FETCH completed\r\n")

    run(scenario())


def test_uid_commands_may_carry_expunges(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first, second = await two_sessions(e, 3)
            await second.ok(Store(ALL, StoreMode.ADD, True, frozenset({"\\Deleted"})))
            await second.ok(Expunge())
            assert await first.text(Fetch(ALL, (FetchItem.UID,), uid=True)) == (
                "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n"
                "* 1 EXPUNGE\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\na3 OK FETCH completed\r\n")

    run(scenario())


def test_idle_is_woken_at_once_and_ends_with_done(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first, second = await two_sessions(e, 1)
            assert await first.text(Idle(), "idle1") == "+ idling\r\n"
            waiter = asyncio.create_task(first.session.wait_for_change())
            await asyncio.sleep(0)
            assert not waiter.done()
            await second.append("INBOX", MSG)
            async with asyncio.timeout(5):
                await waiter  # woken by the in-process change, not by a poll
            updates = [r async for r in first.session.idle_updates()]
            assert await wire(updates) == "* 2 EXISTS\r\n* 0 RECENT\r\n"
            assert await wire(await first.events(IdleDone("idle1"))) == "idle1 OK IDLE terminated\r\n"

    run(scenario())


def test_a_deleted_or_renamed_selected_mailbox(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            setup = e.client()
            await setup.login()
            await setup.ok(Create("Box"))
            first, second = await two_sessions(e, 1, "Box")
            await second.ok(Rename("Box", "Renamed"))
            assert await first.text(Noop()) == "a3 OK NOOP completed\r\n"  # the selection goes on
            await setup.ok(Delete("Renamed"))
            assert await first.text(Noop()) == ("* BYE The selected mailbox was deleted\r\n"
                                                "a4 OK NOOP completed\r\n")
            assert first.state is State.LOGOUT

    run(scenario())


def test_silent_store_still_reports_what_others_changed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            first, _ = await two_sessions(e, 2)
            await e.store.store_flags(await e.inbox_id(), [1], FlagMode.ADD, frozenset({"$Other"}))
            answer = await first.text(Store(ALL, StoreMode.ADD, True, frozenset({"\\Seen"})))
            assert answer == ("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Other)\r\n"
                              "* 1 FETCH (FLAGS ($Other \\Seen))\r\na3 OK STORE completed\r\n")

    run(scenario())
