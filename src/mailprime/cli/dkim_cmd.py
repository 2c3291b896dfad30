"""`mailprime dkim`: DKIM signing keys per sending domain, their DNS records, and rotation.

The TXT records are printed plainly (never wrapped), one zone-file line per key, so that they
can be pasted into a zone or read by a script.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.address import normalize_domain
from mailprime.domain.clock import SystemClock
from mailprime.domain.dkim import DkimKey, DkimKeyState, DkimKeyType
from mailprime.domain.errors import InvalidAddress
from mailprime.services.dkim_keys import DkimKeys, PublishedRecord, publish
from mailprime.storage.ports import Store

dkim_app = typer.Typer(
    help="DKIM signing keys (RSA-2048 and Ed25519) per sending domain: generate, publish, rotate.",
    no_args_is_help=True)

AlgorithmOpt = Annotated[str | None, typer.Option(
    "--algorithm", "-a", help="rsa or ed25519 (default: one key of each, for dual signatures).")]
SelectorOpt = Annotated[str | None, typer.Option(
    "--selector", "-s", help="The selector (default: mpYYYYMM-rsa / mpYYYYMM-ed); needs --algorithm.")]
DomainArg = Annotated[str, typer.Argument(help="The sending domain (the From address's domain).")]
OptionalDomainArg = Annotated[str | None, typer.Argument(help="Only this domain (default: all).")]
SelectorArg = Annotated[str, typer.Argument(help="The key's selector (see `mailprime dkim list`).")]


def _domain(name: str) -> str:
    try:
        return normalize_domain(name)
    except InvalidAddress as exc:
        fail(f"{name!r}: {exc.message}", 2)


def _key_type(text: str | None) -> DkimKeyType | None:
    if text is None:
        return None
    try:
        return DkimKeyType(text.lower())
    except ValueError:
        fail(f"--algorithm {text!r}: choose rsa or ed25519", 2)


def _echo_records(records: list[PublishedRecord]) -> None:
    for record in records:
        typer.echo(record.zone_line)


@dkim_app.command("keygen")
def keygen(domain: DomainArg, config: ConfigOpt, selector: SelectorOpt = None,
           algorithm: AlgorithmOpt = None) -> None:
    """Generate signing keys for DOMAIN and print the TXT records to publish.

    A key signs at once if DOMAIN has no active key of its type; otherwise it waits, published,
    for `mailprime dkim activate` (rotation: publish first, activate once DNS has it)."""
    name = _domain(domain)
    key_type = _key_type(algorithm)
    if selector is not None and key_type is None:
        fail("a selector names one key: give --algorithm rsa or ed25519 with --selector", 2)

    async def act(store: Store, _: Settings) -> list[DkimKey]:
        return await DkimKeys(store, SystemClock()).generate(name, selector=selector,
                                                            key_type=key_type)

    created = run_with_store(config, act)
    for key in created:
        if key.active:
            state = "active: signs mail from now on"
        else:
            state = (f"published, not signing yet: once DNS serves it, run `mailprime dkim "
                     f"activate {key.domain} {key.selector}`")
        console.print(f"{key.key_type.value} key [bold]{key.selector}[/] for {key.domain} "
                      f"({escape(state)})")
    console.print("Publish in DNS:")
    _echo_records([publish(k) for k in created])


@dkim_app.command("dns")
def dns(config: ConfigOpt, domain: OptionalDomainArg = None) -> None:
    """Print the TXT records to publish: every key that is not retired."""
    name = _domain(domain) if domain is not None else None

    async def act(store: Store, _: Settings) -> list[PublishedRecord]:
        return await DkimKeys(store, SystemClock()).records(name)

    records = run_with_store(config, act)
    if not records:
        fail(f"no DKIM keys{f' for {name}' if name else ''} (create them with "
             "`mailprime dkim keygen DOMAIN`)")
    _echo_records(records)


@dkim_app.command("list")
def list_keys(config: ConfigOpt, domain: OptionalDomainArg = None) -> None:
    """List keys and their state: active, published (waiting or replaced) or retired."""
    name = _domain(domain) if domain is not None else None

    async def act(store: Store, _: Settings) -> list[DkimKey]:
        return list(await DkimKeys(store, SystemClock()).keys(name))

    table = Table("domain", "selector", "algorithm", "state", "created (UTC)", "retired (UTC)")
    for key in run_with_store(config, act):
        table.add_row(key.domain, key.selector, key.key_type.value, key.state.value,
                      key.created_at.strftime("%Y-%m-%d %H:%M"),
                      key.retired_at.strftime("%Y-%m-%d %H:%M") if key.retired_at else "")
    console.print(table)


@dkim_app.command("activate")
def activate(domain: DomainArg, selector: SelectorArg, config: ConfigOpt) -> None:
    """Sign DOMAIN's mail with key SELECTOR from now on.

    Run it once DNS serves the key's TXT record. The key it replaces (same algorithm) stays
    published until you retire it, so mail it signed still verifies."""
    name = _domain(domain)

    async def act(store: Store, _: Settings) -> tuple[DkimKey, list[DkimKey]]:
        return await DkimKeys(store, SystemClock()).activate(name, selector)

    key, replaced = run_with_store(config, act)
    console.print(f"{key.key_type.value} key [bold]{key.selector}[/] of {key.domain} is active")
    for old in replaced:
        console.print(f"{old.selector} stays published: retire it with `mailprime dkim retire "
                      f"{old.domain} {old.selector}` once mail it signed has been delivered "
                      "(a few days)")


@dkim_app.command("retire")
def retire(domain: DomainArg, selector: SelectorArg, config: ConfigOpt,
           force: Annotated[bool, typer.Option(
               "--force", help="Retire even the active key (that key type stops signing).")] = False,
           ) -> None:
    """Retire key SELECTOR of DOMAIN: it no longer signs nor is listed by `dkim dns`.

    Then remove its TXT record from DNS. The active key is refused unless --force."""
    name = _domain(domain)

    async def act(store: Store, _: Settings) -> DkimKey:
        return await DkimKeys(store, SystemClock()).retire(name, selector, force=force)

    key = run_with_store(config, act)
    assert key.state is DkimKeyState.RETIRED
    console.print(f"key [bold]{key.selector}[/] of {key.domain} retired: remove the TXT record "
                  f"{key.selector}._domainkey.{key.domain}")
