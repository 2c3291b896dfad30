"""`mailprime list`: mailing lists (create, list, show, update, delete) and their members."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.audience import Contact, MailingList, Membership, MembershipStatus, OptIn
from mailprime.storage.ports import Store

list_app = typer.Typer(help="Mailing lists and their members.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The list's name.")]
MAX_NAME = 200


async def _get(store: Store, name: str) -> MailingList:
    found = await store.get_list(name)
    if found is None:
        fail(f"no list {name!r}", 1)
    return found


@list_app.command("create")
def create(name: NameArg, config: ConfigOpt,
           opt_in: Annotated[OptIn, typer.Option(help="double: members are mailed once they "
                                                      "confirm; single: at once.")] = OptIn.DOUBLE,
           description: Annotated[str, typer.Option(help="What the list is about.")] = "") -> None:
    """Create a mailing list (double opt-in unless --opt-in single)."""
    if not name.strip() or len(name) > MAX_NAME:
        fail(f"list name: 1 to {MAX_NAME} characters", 2)

    async def act(store: Store, _: Settings) -> MailingList:
        return await store.create_list(name, description=description, opt_in=opt_in)

    created = run_with_store(config, act)
    console.print(f"created list #{created.id} {escape(created.name)} ({created.opt_in.value} opt-in)")


@list_app.command("list")
def list_lists(config: ConfigOpt) -> None:
    """Every list with its member counts."""
    async def act(store: Store, _: Settings) -> list[tuple[MailingList, dict[MembershipStatus, int]]]:
        return [(lst, dict(c)) for lst, c in await store.list_lists()]

    table = Table("id", "name", "opt-in", "confirmed", "unconfirmed", "unsubscribed", "description")
    for lst, counts in run_with_store(config, act):
        table.add_row(str(lst.id), escape(lst.name), lst.opt_in.value,
                      *(str(counts.get(s, 0)) for s in (MembershipStatus.CONFIRMED,
                                                         MembershipStatus.UNCONFIRMED,
                                                         MembershipStatus.UNSUBSCRIBED)),
                      escape(lst.description))
    console.print(table)


@list_app.command("show")
def show(name: NameArg, config: ConfigOpt) -> None:
    """One list: its settings and member counts."""
    async def act(store: Store, _: Settings) -> tuple[MailingList, dict[MembershipStatus, int]]:
        lst = await _get(store, name)
        return lst, next(dict(c) for x, c in await store.list_lists() if x.id == lst.id)

    lst, counts = run_with_store(config, act)
    console.print(f"[bold]{escape(lst.name)}[/] #{lst.id}, {lst.opt_in.value} opt-in, created "
                  f"{lst.created_at:%Y-%m-%d}")
    if lst.description:
        console.print(escape(lst.description))
    for status in MembershipStatus:
        console.print(f"{status.value}: {counts.get(status, 0)}")


@list_app.command("update")
def update(name: NameArg, config: ConfigOpt,
           rename: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
           description: Annotated[str | None, typer.Option(help="A new description.")] = None,
           opt_in: Annotated[OptIn | None, typer.Option(help=(
               "single -> double is always allowed (unconfirmed members wait for their "
               "confirmation); double -> single is refused while a member is unconfirmed."))]
           = None) -> None:
    """Change a list's name, description or opt-in (memberships are not changed)."""
    if rename is not None and (not rename.strip() or len(rename) > MAX_NAME
                               or any(ch in rename for ch in "\r\n\0")):
        fail(f"--name: 1 to {MAX_NAME} characters on one line", 2)
    if rename is None and description is None and opt_in is None:
        fail("nothing to change: give --name, --description or --opt-in", 2)

    async def act(store: Store, _: Settings) -> MailingList:
        lst = await _get(store, name)
        return await store.update_list(lst.id, name=rename.strip() if rename else None,
                                       description=description, opt_in=opt_in)

    lst = run_with_store(config, act)
    console.print(f"updated list #{lst.id} {escape(lst.name)} ({lst.opt_in.value} opt-in)")


@list_app.command("delete")
def delete(name: NameArg, config: ConfigOpt,
           yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete a list and its memberships (contacts and the consent ledger stay)."""
    if not yes and not typer.confirm(f"Delete list {name!r} and its memberships?"):
        fail("not deleted", 1)

    async def act(store: Store, _: Settings) -> int:
        return await store.delete_list(name)

    console.print(f"deleted list {escape(name)} ({run_with_store(config, act)} memberships)")


@list_app.command("members")
def members(name: NameArg, config: ConfigOpt,
            status: Annotated[MembershipStatus | None, typer.Option(help="Only this status.")]
            = None,
            limit: Annotated[int, typer.Option(help="Show at most this many.")] = 100) -> None:
    """The members of a list, oldest contact first (`contact export --list` for all of them)."""
    if not 1 <= limit <= 10_000:
        fail("--limit: 1 to 10000", 2)

    async def act(store: Store, _: Settings) -> list[tuple[Contact, Membership]]:
        lst = await _get(store, name)
        return list(await store.list_members(lst.id, status=status, limit=limit))

    table = Table("id", "email", "name", "status", "since (UTC)")
    rows = run_with_store(config, act)
    for c, m in rows:
        table.add_row(str(c.id), escape(c.email), escape(c.name), m.status.value,
                      m.updated_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    console.print(f"{len(rows)} shown")
