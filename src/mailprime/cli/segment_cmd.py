"""`mailprime segment`: named filter expressions over contacts (docs/marketing.md has the syntax).

The expression is parsed before it is stored, so a stored segment always parses; an error says
the column it was found at.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.audience import Contact, Segment, SegmentError, SegmentFilter
from mailprime.marketing.segments import parse_segment
from mailprime.storage.ports import Store

segment_app = typer.Typer(help="Segments: filters over contacts' attributes, lists and "
                               "engagement.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The segment's name.")]


def _parse(expression: str) -> SegmentFilter:
    try:
        return parse_segment(expression)
    except SegmentError as exc:
        console.print(escape(expression))
        console.print(" " * (exc.position - 1) + "^")
        fail(f"segment: {exc.message}", 2)


async def _get(store: Store, name: str) -> Segment:
    found = await store.get_segment(name)
    if found is None:
        fail(f"no segment {name!r}", 1)
    return found


@segment_app.command("create")
def create(name: NameArg, expression: Annotated[str, typer.Argument(
        help='The filter, e.g. \'attributes.plan = "pro" and opened within 90 days\'.')],
           config: ConfigOpt) -> None:
    """Create a named segment."""
    _parse(expression)

    async def act(store: Store, _: Settings) -> Segment:
        return await store.create_segment(name, expression)

    seg = run_with_store(config, act)
    console.print(f"created segment #{seg.id} {escape(seg.name)}")


@segment_app.command("update")
def update(name: NameArg, config: ConfigOpt,
           rename: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
           expression: Annotated[str | None, typer.Option(help=(
               "A new filter (refused while a scheduled, sending or paused campaign uses "
               "the segment)."))] = None) -> None:
    """Rename a segment or change its expression (parsed first, like `create`)."""
    if rename is None and expression is None:
        fail("nothing to change: give --name or --expression", 2)
    if rename is not None and not rename.strip():
        fail("--name: not only white space", 2)
    if expression is not None:
        _parse(expression)

    async def act(store: Store, _: Settings) -> Segment:
        seg = await _get(store, name)
        return await store.update_segment(seg.id, name=rename.strip() if rename else None,
                                          expression=expression)

    seg = run_with_store(config, act)
    console.print(f"updated segment #{seg.id} {escape(seg.name)}: {escape(seg.expression)}")


@segment_app.command("list")
def list_segments(config: ConfigOpt) -> None:
    """Every segment and its expression."""
    async def act(store: Store, _: Settings) -> list[Segment]:
        return list(await store.list_segments())

    table = Table("id", "name", "expression")
    for seg in run_with_store(config, act):
        table.add_row(str(seg.id), escape(seg.name), escape(seg.expression))
    console.print(table)


@segment_app.command("count")
def count(name_or_expression: Annotated[str, typer.Argument(
        help="A segment's name, or an expression to try.")], config: ConfigOpt) -> None:
    """How many contacts match a segment (or an expression not yet saved)."""
    async def act(store: Store, _: Settings) -> int:
        found = await store.get_segment(name_or_expression)
        expression = found.expression if found else name_or_expression
        return await store.count_contacts(_parse(expression))

    console.print(f"{run_with_store(config, act)} contacts match")


@segment_app.command("show")
def show(name: NameArg, config: ConfigOpt,
         limit: Annotated[int, typer.Option(help="Show at most this many contacts.")] = 20) -> None:
    """A segment, its count and its first contacts."""
    if not 0 <= limit <= 10_000:
        fail("--limit: 0 to 10000", 2)

    async def act(store: Store, _: Settings) -> tuple[Segment, int, list[Contact]]:
        seg = await _get(store, name)
        tree = _parse(seg.expression)
        return (seg, await store.count_contacts(tree),
                list(await store.contacts_page(segment=tree, limit=limit)) if limit else [])

    seg, total, sample = run_with_store(config, act)
    console.print(f"[bold]{escape(seg.name)}[/]: {escape(seg.expression)}")
    console.print(f"{total} contacts match")
    for c in sample:
        console.print(f"  {escape(c.email)}  {escape(c.name)}")
