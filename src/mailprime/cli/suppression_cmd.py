"""`mailprime suppression`: the addresses mail is no longer sent to, and why.

Bounces and complaints add entries on their own (services.suppression); an operator lists them,
checks one address, adds one by hand or takes one off. Adding and removing append SUPPRESSED /
UNSUPPRESSED events, so the event log tells the whole story of an address.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.address import Address, normalize_domain
from mailprime.domain.clock import SystemClock
from mailprime.domain.deliverability import GLOBAL_SCOPE, Suppression, SuppressionReason
from mailprime.domain.errors import InvalidAddress
from mailprime.domain.mail import EventKind
from mailprime.services.suppression import REASON_WORDS
from mailprime.storage.ports import Store

suppression_app = typer.Typer(
    help="The suppression list: addresses that bounced hard, complained, or were added by hand.",
    no_args_is_help=True)

AddressArg = Annotated[str, typer.Argument(help="The recipient address.")]
ScopeOpt = Annotated[str | None, typer.Option(
    "--domain", "-d", help="A sending domain's own list (default: the global list, every domain).")]
MAX_LIST = 100_000  # rows a listing reads at most


def _address(text: str) -> str:
    try:
        return Address.parse(text).key
    except InvalidAddress as exc:
        fail(f"{text!r}: {exc.message}", 2)


def _scope(domain: str | None) -> str:
    if domain is None:
        return GLOBAL_SCOPE
    try:
        return normalize_domain(domain)
    except InvalidAddress as exc:
        fail(f"--domain {domain!r}: {exc.message}", 2)


def _row(entry: Suppression) -> tuple[str, ...]:
    return (entry.address, entry.scope or "(global)", entry.reason.value,
            entry.created_at.strftime("%Y-%m-%d %H:%M"), entry.queue_id or "",
            escape(entry.detail[:120]))


@suppression_app.command("list")
def list_entries(config: ConfigOpt, domain: ScopeOpt = None,
                 all_scopes: Annotated[bool, typer.Option(
                     "--all", help="Every list: global and every sending domain's.")] = False,
                 limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 1000,
                 ) -> None:
    """List suppressed addresses, newest first, with the reason and its evidence."""
    if not 1 <= limit <= MAX_LIST:
        fail(f"--limit: 1 to {MAX_LIST}", 2)
    scope = None if all_scopes else _scope(domain)

    async def act(store: Store, _: Settings) -> list[Suppression]:
        return list(await store.list_suppressions(scope, limit=limit))

    entries = run_with_store(config, act)
    table = Table("address", "scope", "reason", "since (UTC)", "queue id", "evidence")
    for entry in entries:
        table.add_row(*_row(entry))
    console.print(table)
    console.print(f"{len(entries)} suppressed")


@suppression_app.command("check")
def check(address: AddressArg, config: ConfigOpt, domain: Annotated[str | None, typer.Option(
        "--domain", "-d", help="The sending domain to check for (its list and the global one).")]
          = None) -> None:
    """Say whether mail to ADDRESS would be refused; exit status 1 if it is suppressed."""
    key = _address(address)
    sending = _scope(domain)

    async def act(store: Store, _: Settings) -> Suppression | None:
        return await store.find_suppression(key, sending)

    entry = run_with_store(config, act)
    if entry is None:
        console.print(f"{key}: not suppressed")
        return
    words = REASON_WORDS.get(entry.reason, entry.reason.value)
    console.print(f"{key}: [bold]suppressed[/] ({escape(words)} on {entry.created_at:%Y-%m-%d}, "
                  f"{entry.scope or 'global'} list)")
    if entry.detail:
        console.print(f"evidence: {escape(entry.detail)}")
    raise typer.Exit(1)


@suppression_app.command("add")
def add(address: AddressArg, config: ConfigOpt, domain: ScopeOpt = None,
        note: Annotated[str, typer.Option(help="Why (kept as the evidence).")] = "") -> None:
    """Suppress ADDRESS by hand (reason "manual")."""
    key = _address(address)
    scope = _scope(domain)

    async def act(store: Store, _: Settings) -> bool:
        entry = Suppression(address=key, scope=scope, reason=SuppressionReason.MANUAL,
                            created_at=SystemClock().now(), detail=note or "added by an operator")
        added = await store.suppress(entry)
        if added:
            await store.append(EventKind.SUPPRESSED, None, key, entry.detail,
                               (("reason", "manual"), ("scope", scope or "global"),
                                ("source", "cli")))
        return added

    if run_with_store(config, act):
        console.print(f"{key}: suppressed ({scope or 'global'} list)")
    else:
        console.print(f"{key}: already suppressed ({scope or 'global'} list); kept as it was")


@suppression_app.command("remove")
def remove(address: AddressArg, config: ConfigOpt, domain: ScopeOpt = None,
           all_scopes: Annotated[bool, typer.Option(
               "--all", help="From every list: global and every sending domain's.")] = False,
           ) -> None:
    """Take ADDRESS off the suppression list, so mail may go to it again."""
    key = _address(address)
    scope = None if all_scopes else _scope(domain)

    async def act(store: Store, _: Settings) -> int:
        removed = await store.unsuppress(key, scope)
        if removed:
            await store.append(EventKind.UNSUPPRESSED, None, key, "removed by an operator",
                               (("scope", "all" if scope is None else scope or "global"),
                                ("source", "cli")))
        return removed

    removed = run_with_store(config, act)
    if not removed:
        where = "" if scope is None else f" on the {scope or 'global'} list"
        fail(f"{key} is not suppressed{where}", 1)
    console.print(f"{key}: removed ({removed} entr{'y' if removed == 1 else 'ies'})")
