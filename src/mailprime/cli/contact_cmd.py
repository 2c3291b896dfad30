"""`mailprime contact`: add, show, list, import, export (CSV), export-data (GDPR) and erase.

Two exports, two names: `contact export` writes every contact (or a list's members) as CSV for
re-import or a spreadsheet; `contact export-data EMAIL` writes everything held about one person
as JSON (GDPR Art. 15/20). `contact erase EMAIL` is GDPR Art. 17 (storage's erase_contact).
Long work (import, export) shows a Rich progress bar on a terminal, counting rows.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.audience import (
    Contact,
    ContactData,
    ErasureResult,
    ImportMode,
    JsonValue,
    MailingList,
)
from mailprime.domain.ids import ListId
from mailprime.marketing.contacts import add_contact
from mailprime.marketing.csv_io import ImportReport, export_contacts, import_contacts
from mailprime.storage.ports import Store

contact_app = typer.Typer(help="Contacts: add, show, list, import/export CSV, GDPR export and "
                               "erasure.", no_args_is_help=True)

EmailArg = Annotated[str, typer.Argument(help="The contact's address.")]
ListOpt = Annotated[str | None, typer.Option("--list", "-l", help="A list's name.")]


def _progress(label: str) -> Progress:
    return Progress(SpinnerColumn(), TextColumn(f"{label} [bold]{{task.completed:,}}[/] rows"),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


async def _list_id(store: Store, name: str | None) -> ListId | None:
    if name is None:
        return None
    found: MailingList | None = await store.get_list(name)
    if found is None:
        fail(f"no list {name!r} (see `mailprime list list`)", 1)
    return found.id


@contact_app.command("add")
def add(email: EmailArg, config: ConfigOpt,
        name: Annotated[str, typer.Option(help="The contact's name.")] = "",
        attributes: Annotated[str, typer.Option(help='Attributes as a JSON object, '
                                                     'e.g. \'{"plan": "pro"}\'.')] = "{}") -> None:
    """Add a contact (the address is checked for syntax; no DNS look-up)."""
    try:
        attrs = json.loads(attributes)
    except ValueError as exc:
        fail(f"--attributes: not JSON ({exc})", 2)
    if not isinstance(attrs, dict):
        fail("--attributes: must be a JSON object", 2)

    async def act(store: Store, _: Settings) -> Contact:
        return await add_contact(store, email, name, attrs)

    contact = run_with_store(config, act)
    console.print(f"added contact #{contact.id} {escape(contact.email)}")


@contact_app.command("show")
def show(email: EmailArg, config: ConfigOpt) -> None:
    """Show a contact, its attributes and its lists."""
    async def act(store: Store, _: Settings) -> ContactData:
        return await store.contact_data(email, event_limit=0)

    data = run_with_store(config, act)
    if data.contact is None:
        fail(f"no contact {email}", 1)
    c = data.contact
    console.print(f"[bold]{escape(c.email)}[/] #{c.id}  {escape(c.name)}")
    console.print(f"attributes: {escape(json.dumps(dict(c.attributes), ensure_ascii=False))}")
    table = Table("list", "opt-in", "status", "since (UTC)")
    for lst, m in data.memberships:
        table.add_row(escape(lst.name), lst.opt_in.value, m.status.value,
                      m.updated_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@contact_app.command("list")
def list_contacts(config: ConfigOpt,
                  limit: Annotated[int, typer.Option(help="Show at most this many.")] = 100) -> None:
    """List contacts, oldest first."""
    if not 1 <= limit <= 10_000:
        fail("--limit: 1 to 10000", 2)

    async def act(store: Store, _: Settings) -> tuple[list[Contact], int]:
        return list(await store.contacts_page(limit=limit)), await store.count_contacts()

    contacts, total = run_with_store(config, act)
    table = Table("id", "email", "name", "attributes")
    for c in contacts:
        table.add_row(str(c.id), escape(c.email), escape(c.name),
                      escape(json.dumps(dict(c.attributes), ensure_ascii=False)[:80]))
    console.print(table)
    console.print(f"{len(contacts)} of {total} contacts")


@contact_app.command("import")
def import_csv(
    file: Annotated[Path, typer.Argument(help="CSV with a header row: email, name, attributes "
                                              "(JSON) and/or attributes.KEY columns.")],
    config: ConfigOpt, *, list_name: ListOpt = None,
    mode: Annotated[ImportMode, typer.Option(help="Existing contacts: update or leave.")]
        = ImportMode.UPSERT,
    confirmed: Annotated[bool, typer.Option(
        "--confirmed", help="State that these people already confirmed (recorded in the consent "
                            "ledger); without it, new members are unconfirmed.")] = False,
    rejects: Annotated[Path | None, typer.Option(
        help="Write rejected rows (row, reason, email) to this CSV file.")] = None,
    wording: Annotated[str, typer.Option(help="Version of the consent text they agreed to.")]
        = "",
) -> None:
    """Import contacts from CSV, streaming (any size, bounded memory), optionally onto a list."""
    if not file.is_file():
        fail(f"{file}: no such file", 2)

    async def act(store: Store, _: Settings) -> ImportReport:
        list_id = await _list_id(store, list_name)
        with ExitStack() as stack, _progress("imported") as bar:
            task = bar.add_task("import", total=None)
            source = stack.enter_context(file.open(newline="", encoding="utf-8-sig"))
            out = (stack.enter_context(rejects.open("w", newline="", encoding="utf-8"))
                   if rejects else None)
            return await import_contacts(
                store, source, rejects=out, mode=mode, list_id=list_id, confirmed=confirmed,
                wording_version=wording, progress=lambda n: bar.update(task, completed=n))

    report = run_with_store(config, act)
    console.print(f"{report.rows:,} rows: {report.created:,} created, {report.updated:,} updated, "
                  f"{report.skipped:,} skipped, {report.rejected:,} rejected; "
                  f"{report.subscribed:,} list memberships added or confirmed")
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1])[:10]:
        console.print(f"  {n:,} × {escape(reason)}")
    if report.rejected and rejects:
        console.print(f"rejected rows written to {rejects}")


@contact_app.command("export")
def export_csv(config: ConfigOpt, list_name: ListOpt = None,
               output: Annotated[Path | None, typer.Option(
                   "--output", "-o", help="File to write (default: standard output).")] = None,
               ) -> None:
    """Export every contact (or a list's members, with status) as CSV, streaming."""
    async def act(store: Store, _: Settings) -> int:
        list_id = await _list_id(store, list_name)
        with ExitStack() as stack, _progress("exported") as bar:
            task = bar.add_task("export", total=None)
            out: TextIO = (stack.enter_context(output.open("w", newline="", encoding="utf-8"))
                           if output else sys.stdout)
            return await export_contacts(store, out, list_id=list_id,
                                         progress=lambda n: bar.update(task, completed=n))

    count = run_with_store(config, act)
    if output:
        console.print(f"{count:,} contacts written to {output}")


def _data_json(data: ContactData) -> dict[str, JsonValue]:
    def when(value: Any) -> JsonValue:
        return value.isoformat() if value is not None else None

    c = data.contact
    return {
        "email": data.email,
        "contact": None if c is None else {
            "id": c.id, "email": c.email, "name": c.name, "attributes": dict(c.attributes),
            "created_at": when(c.created_at), "updated_at": when(c.updated_at),
            "last_opened_at": when(c.last_opened_at), "last_clicked_at": when(c.last_clicked_at)},
        "memberships": [{"list": lst.name, "status": m.status.value, "opt_in": lst.opt_in.value,
                         "since": when(m.created_at), "updated_at": when(m.updated_at)}
                        for lst, m in data.memberships],
        "consent": [{"action": e.action.value, "purpose": e.purpose, "source": e.source.value,
                     "wording_version": e.wording_version, "ip": e.ip, "at": when(e.at)}
                    for e in data.consent],
        "events": [{"kind": e.kind.value, "at": when(e.at), "queue_id": e.queue_id,
                    "detail": e.detail, "attrs": dict(e.attrs)} for e in data.events],
        "suppressions": [{"scope": s.scope or "global", "reason": s.reason.value,
                          "detail": s.detail, "since": when(s.created_at)}
                         for s in data.suppressions],
    }


@contact_app.command("export-data")
def export_data(email: EmailArg, config: ConfigOpt) -> None:
    """GDPR export: everything held about EMAIL (contact, lists, consent, events,
    suppressions) as JSON on standard output."""
    async def act(store: Store, _: Settings) -> ContactData:
        return await store.contact_data(email)

    typer.echo(json.dumps(_data_json(run_with_store(config, act)), indent=2, ensure_ascii=False))


@contact_app.command("erase")
def erase(email: EmailArg, config: ConfigOpt,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]
          = False) -> None:
    """GDPR erasure: remove EMAIL's personal data everywhere (mailboxes aside), keeping only a
    hashed suppression entry so that it is never mailed again. Cannot be undone."""
    if not yes and not typer.confirm(f"Erase every trace of {email}? This cannot be undone"):
        fail("not erased", 1)

    async def act(store: Store, _: Settings) -> ErasureResult:
        return await store.erase_contact(email)

    r = run_with_store(config, act)
    console.print(f"{escape(email)}: erased (contact {'removed' if r.contact else 'not held'}, "
                  f"{r.memberships} memberships, {r.consent_entries} consent entries and "
                  f"{r.events} events pseudonymised, {r.suppressions} suppression entries "
                  f"replaced); a hashed suppression keeps it from being mailed again")
