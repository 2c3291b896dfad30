"""Mailbox commands of the IMAP session against a real store: SELECT/EXAMINE responses, LIST
(wildcards, references, CHILDREN, SPECIAL-USE, LIST-EXTENDED selection and return options,
LIST-STATUS), LSUB, CREATE/DELETE/RENAME rules, SUBSCRIBE, STATUS, NAMESPACE and QUOTA."""

from __future__ import annotations

from pathlib import Path

from mailprime.domain.mail import Mailbox
from mailprime.proto.imap.types import (
    Create,
    Delete,
    Enable,
    Examine,
    GetQuota,
    GetQuotaRoot,
    List,
    ListReturn,
    Lsub,
    Namespace,
    Rename,
    Select,
    SetQuota,
    State,
    Status,
    Subscribe,
    Unsubscribe,
)
from mailprime.services.imap.mailboxes import (
    ListQuery,
    canonical_pattern,
    compile_pattern,
    invalid_name,
    list_entries,
    lsub_entries,
    normalize,
    parents,
)
from mailprime.services.imap.quota import QuotaLimits
from tests.services.test_imap_session_harness import MSG, Client, Env, env, run, wire

DEFAULT_LIST = ('* LIST (\\HasNoChildren) "/" INBOX\r\n'
                '* LIST (\\HasNoChildren \\Archive) "/" Archive\r\n'
                '* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
                '* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
                '* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
                '* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n')


async def logged_in(e: Env) -> Client:
    client = e.client()
    await client.login()
    return client


def test_select_and_examine_report_the_mailbox(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            await e.deliver(flags=frozenset({"\\Seen"}))
            await e.deliver(flags=frozenset({"$Important"}))
            client = await logged_in(e)
            box = await e.store.get_mailbox(e.alice.id, "INBOX")
            assert box is not None
            text = await client.text(Select("inbox"))
            assert text == (
                "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)\r\n"
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] "
                "Flags permitted\r\n"
                "* 2 EXISTS\r\n* 0 RECENT\r\n* OK [UNSEEN 2] First unseen\r\n"
                f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid\r\n"
                "* OK [UIDNEXT 3] Predicted next UID\r\n"
                f"* OK [HIGHESTMODSEQ {box.highestmodseq}] Highest\r\n"
                "a2 OK [READ-WRITE] SELECT completed\r\n")
            assert client.state is State.SELECTED
            text = await client.text(Examine("Sent"))
            assert text.startswith("* OK [CLOSED] Previous mailbox closed\r\n* FLAGS (")
            assert "[PERMANENTFLAGS ()]" in text and text.endswith("a3 OK [READ-ONLY] EXAMINE completed\r\n")
            # A failed SELECT leaves nothing selected (RFC 9051 6.3.2).
            assert await client.text(Select("Nope")) == ("* OK [CLOSED] Previous mailbox closed\r\n"
                                                         "a4 NO [NONEXISTENT] Mailbox does not exist\r\n")
            assert client.state is State.AUTHENTICATED

    run(scenario())


def test_list_patterns_children_and_special_use(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await logged_in(e)
            assert await client.text(List("", ("*",))) == DEFAULT_LIST + "a2 OK LIST completed\r\n"
            assert await client.text(List("", ("",))) == ('* LIST (\\Noselect) "/" ""\r\n'
                                                         "a3 OK LIST completed\r\n")
            await client.ok(Create("Work/2026/Q1"))
            await client.ok(Create("Work/Old/"))
            assert await client.text(List("", ("Work/%",))) == (
                '* LIST (\\HasChildren) "/" Work/2026\r\n'
                '* LIST (\\HasNoChildren) "/" Work/Old\r\n'
                "a6 OK LIST completed\r\n")
            assert await client.text(List("Work/", ("*",))) == (
                '* LIST (\\HasChildren) "/" Work/2026\r\n'
                '* LIST (\\HasNoChildren) "/" Work/2026/Q1\r\n'
                '* LIST (\\HasNoChildren) "/" Work/Old\r\n'
                "a7 OK LIST completed\r\n")
            assert await client.text(List("", ("%",))) == DEFAULT_LIST.replace(
                '* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
                '* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n* LIST (\\HasChildren) "/" Work\r\n',
            ) + "a8 OK LIST completed\r\n"
            assert await client.text(List("", ("inbox", "Sen%"))) == (
                '* LIST (\\HasNoChildren) "/" INBOX\r\n'
                '* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
                "a9 OK LIST completed\r\n")
            special = await client.text(List("", ("*",), frozenset({"SPECIAL-USE"}),
                                             ListReturn(special_use=True)))
            assert "INBOX" not in special and "Work" not in special and "\\Drafts" in special

    run(scenario())


def test_list_extended_subscribed_and_status(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            await e.deliver()
            client = await logged_in(e)
            await client.ok(Create("A/B"))
            for name in ("Archive", "Drafts", "Junk", "Sent", "Trash", "A"):
                await client.ok(Unsubscribe(name))
            assert await client.text(List("", ("*",), frozenset({"SUBSCRIBED"}))) == (
                '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n'
                '* LIST (\\HasNoChildren \\Subscribed) "/" A/B\r\n'
                f"a{client._n} OK LIST completed\r\n")
            recursive = await client.text(List("", ("%",), frozenset({"SUBSCRIBED", "RECURSIVEMATCH"})))
            assert recursive.startswith(
                '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n'
                '* LIST (\\HasChildren) "/" A ("CHILDINFO" ("SUBSCRIBED"))\r\n')
            bad = await client.text(List("", ("*",), frozenset({"RECURSIVEMATCH"})))
            assert " BAD RECURSIVEMATCH" in bad
            with_status = await client.text(List("", ("INBOX", "A"), frozenset(),
                                                 ListReturn(subscribed=True, status=("MESSAGES", "UNSEEN"))))
            assert with_status.startswith(
                '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n'
                "* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\n"
                '* LIST (\\HasChildren) "/" A\r\n'
                "* STATUS A (MESSAGES 0 UNSEEN 0)\r\n")
            assert await client.text(Lsub("", "*")) == (
                '* LSUB () "/" INBOX\r\n* LSUB () "/" A/B\r\n'
                f"a{client._n} OK LSUB completed\r\n")
            assert await client.text(Lsub("", "%")) == (
                '* LSUB () "/" INBOX\r\n* LSUB (\\Noselect) "/" A\r\n'
                f"a{client._n} OK LSUB completed\r\n")
            refused = await client.text(Subscribe("Nope"))
            assert refused.endswith("NO [NONEXISTENT] Mailbox does not exist\r\n")

    run(scenario())


def test_create_delete_rename_rules(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await logged_in(e)
            assert await client.text(Create("inbox")) == "a2 NO [ALREADYEXISTS] Mailbox already exists\r\n"
            assert await client.text(Create("Sent")) == "a3 NO [ALREADYEXISTS] Mailbox already exists\r\n"
            assert (await client.text(Create("a//b"))).startswith("a4 NO [CANNOT] ")
            assert (await client.text(Create("a*"))).startswith("a5 NO [CANNOT] ")
            assert await client.text(Create("Lists/Friends", ("\\flagged",))) == "a6 OK CREATE completed\r\n"
            boxes = {m.name: m for m in await e.store.list_mailboxes(e.alice.id)}
            assert boxes["Lists"].special_use is None and boxes["Lists/Friends"].special_use == "\\Flagged"
            assert (await client.text(Create("X", ("\\Bogus",)))).startswith("a7 NO [USEATTR] ")
            assert await client.text(Delete("INBOX")) == "a8 NO [CANNOT] INBOX cannot be deleted\r\n"
            assert await client.text(Delete("Lists")) == \
                "a9 NO [HASCHILDREN] Mailbox has children; delete them first\r\n"
            assert await client.text(Delete("Nope")) == "a10 NO [NONEXISTENT] Mailbox does not exist\r\n"
            assert await client.text(Rename("Lists", "Lists/Inner")) == \
                "a11 NO [CANNOT] A mailbox cannot be moved into itself\r\n"
            assert await client.text(Rename("Lists", "Sent")) == \
                "a12 NO [ALREADYEXISTS] A mailbox with the new name already exists\r\n"
            assert await client.text(Rename("Lists", "Old/Lists")) == "a13 OK RENAME completed\r\n"
            names = {m.name for m in await e.store.list_mailboxes(e.alice.id)}
            assert {"Old", "Old/Lists", "Old/Lists/Friends"} <= names and "Lists" not in names
            assert await client.text(Delete("Old/Lists/Friends")) == "a14 OK DELETE completed\r\n"
            # RFC 3501 6.3.5: renaming INBOX moves its messages; INBOX stays, empty.
            await e.deliver()
            assert await client.text(Rename("INBOX", "Saved")) == "a15 OK RENAME completed\r\n"
            statuses = await client.text(Status("Saved", ("MESSAGES",)))
            assert statuses.startswith("* STATUS Saved (MESSAGES 1)\r\n")
            emptied = await client.text(Status("INBOX", ("MESSAGES",)))
            assert emptied.startswith("* STATUS INBOX (MESSAGES 0)")
            # Deleting the selected mailbox ends the selection.
            await client.select("Saved")
            assert await client.text(Delete("Saved")) == ("* OK [CLOSED] Selected mailbox deleted\r\n"
                                                          f"a{client._n} OK DELETE completed\r\n")
            assert client.state is State.AUTHENTICATED

    run(scenario())


def test_utf8_and_modified_utf7_names_are_one_name(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            client = await logged_in(e)
            await client.ok(Create("Entwürfe/日本語"))
            listed = await client.text(List("", ("Entw*",)))
            assert '* LIST (\\HasChildren) "/" Entw&APw-rfe\r\n' in listed
            assert '"/" Entw&APw-rfe/&ZeVnLIqe-\r\n' in listed
            rev2 = await logged_in(e)
            await rev2.ok(Enable(("IMAP4REV2",)))
            assert '"/" "Entwürfe/日本語"\r\n' in await rev2.text(List("", ("*",)))

    run(scenario())


def test_status_items(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path) as e:
            await e.deliver(flags=frozenset({"\\Seen"}))
            await e.deliver(flags=frozenset({"\\Deleted"}))
            client = await logged_in(e)
            box = await e.store.get_mailbox(e.alice.id, "INBOX")
            assert box is not None
            items = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                     "HIGHESTMODSEQ")
            assert await client.text(Status("INBOX", items)) == (
                f"* STATUS INBOX (MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY {box.uidvalidity} UNSEEN 1 "
                f"DELETED 1 SIZE {2 * len(MSG)} HIGHESTMODSEQ {box.highestmodseq})\r\n"
                "a2 OK STATUS completed\r\n")
            assert (await client.text(Status("Nope", ("MESSAGES",)))).startswith("a3 NO [NONEXISTENT]")

    run(scenario())


def test_namespace_and_quota(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with env(tmp_path, quota=QuotaLimits(storage=10 * 1024, messages=5)) as e:
            await e.deliver()
            client = await logged_in(e)
            assert await client.text(Namespace()) == \
                '* NAMESPACE (("" "/")) NIL NIL\r\na2 OK NAMESPACE completed\r\n'
            assert await client.text(GetQuotaRoot("INBOX")) == (
                '* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 1 10 MESSAGE 1 5)\r\n'
                "a3 OK GETQUOTAROOT completed\r\n")
            assert await client.text(GetQuota("")) == ('* QUOTA "" (STORAGE 1 10 MESSAGE 1 5)\r\n'
                                                       "a4 OK GETQUOTA completed\r\n")
            assert (await client.text(GetQuota("other"))).startswith("a5 NO [NONEXISTENT]")
            assert await client.text(SetQuota("", (("STORAGE", 1),))) == \
                "a6 NO [NOPERM] Quotas are set by the administrator\r\n"
            # Over quota: the APPEND is refused before its literal, with OVERQUOTA.
            answer = await client.append("INBOX", b"x" * 11 * 1024)
            assert await wire(answer) == "a7 NO [OVERQUOTA] Quota exceeded (storage)\r\n"
            answer = await client.append("INBOX", b"x" * 12 * 1024 * 1024)
            assert await wire(answer) == "a8 NO [TOOBIG] Message larger than the limit of 10485760 octets\r\n"
        unlimited = tmp_path / "unlimited"
        unlimited.mkdir()
        async with env(unlimited) as e:
            client = await logged_in(e)
            assert await client.text(GetQuotaRoot("INBOX")) == ("* QUOTAROOT INBOX\r\n"
                                                                "a2 OK GETQUOTAROOT completed\r\n")

    run(scenario())


# The pure rules ------------------------------------------------------------------------------


def _box(name: str, special: str | None = None, subscribed: bool = True) -> Mailbox:
    return Mailbox(id=hash(name) % 1000, account_id=1, name=name, uidvalidity=1, uidnext=1,  # type: ignore[arg-type]
                   special_use=special, subscribed=subscribed)


def test_names_and_patterns() -> None:
    assert normalize("inbox") == \
        "INBOX" and normalize("Work/") == "Work" and normalize("inbox/x") == "inbox/x"
    assert invalid_name("a/b") is None and invalid_name("") and invalid_name("a\tb") and invalid_name("/a")
    assert parents("a/b/c") == ["a", "a/b"]
    assert canonical_pattern("Work/", "%") == "Work/%" and canonical_pattern("Work/", "/x") == "/x"
    assert compile_pattern("INBOX*").fullmatch("INBOX/x") and compile_pattern("inbox").fullmatch("INBOX")
    assert not compile_pattern("%").fullmatch("a/b") and compile_pattern("*").fullmatch("a/b")
    assert compile_pattern("a.b").fullmatch("a.b") and not compile_pattern("a.b").fullmatch("axb")


def test_missing_parents_are_listed_as_noselect() -> None:
    boxes = [_box("INBOX"), _box("x/y/z")]
    entries = list_entries(boxes, ListQuery(("%",)))
    assert [(e.name, e.attributes) for e in entries] == [
        ("INBOX", ("\\HasNoChildren",)), ("x", ("\\Noselect", "\\HasChildren"))]
    assert [e.name for e in lsub_entries(boxes, "x/%")] == ["x/y"]
