"""`mailprime domain|account|alias`: the directory of local domains, accounts and aliases."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mailprime.cli.context import config_option, console, fail, read_password_stdin, run_with_store
from mailprime.config import Settings
from mailprime.domain.address import Address, normalize_domain
from mailprime.domain.errors import InvalidAddress
from mailprime.services.passwords import generate_password, hash_password
from mailprime.storage.ports import Store

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="Path to mailprime.toml.",
                                        default_factory=config_option)]

PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                                help="Read the password from standard input.")]

domain_app = typer.Typer(help="Manage the local domains mail is accepted for.", no_args_is_help=True)
account_app = typer.Typer(help="Manage mail accounts (mailboxes that can log in).", no_args_is_help=True)
alias_app = typer.Typer(help="Manage aliases (forwarding addresses and catch-alls).", no_args_is_help=True)


def _address(text: str) -> Address:
    try:
        return Address.parse(text)
    except InvalidAddress as exc:
        fail(f"{text!r}: {exc.message}", 2)


def _alias_source(text: str) -> str:
    """An address key, or "@domain" for a catch-all."""
    if not text.startswith("@"):
        return _address(text).key
    try:
        return "@" + normalize_domain(text[1:])
    except InvalidAddress as exc:
        fail(f"{text!r}: {exc.message}", 2)


def _new_password(from_stdin: bool) -> str:
    return read_password_stdin() if from_stdin else generate_password()


def _show_generated(password: str, from_stdin: bool) -> None:
    """A generated password is printed once; one the operator typed is never echoed."""
    if not from_stdin:
        console.print(f"password: [bold]{password}[/]  (shown once)")


@domain_app.command("add")
def domain_add(name: str, config: ConfigOpt) -> None:
    """Accept mail for DOMAIN."""
    try:
        domain = normalize_domain(name)
    except InvalidAddress as exc:
        fail(exc.message, 2)

    async def act(store: Store, _: Settings) -> None:
        await store.add_domain(domain)

    run_with_store(config, act)
    console.print(f"domain [bold]{domain}[/] added")


@domain_app.command("list")
def domain_list(config: ConfigOpt) -> None:
    """List local domains."""

    async def act(store: Store, _: Settings) -> list[str]:
        return list(await store.list_domains())

    domains = run_with_store(config, act)
    table = Table("domain")
    for d in domains:
        table.add_row(d)
    console.print(table)


@domain_app.command("remove")
def domain_remove(name: str, config: ConfigOpt) -> None:
    """Stop accepting mail for DOMAIN (accounts stay until removed)."""
    try:
        domain = normalize_domain(name)
    except InvalidAddress as exc:
        fail(exc.message, 2)

    async def act(store: Store, _: Settings) -> bool:
        # The store's removal is idempotent; an operator who mistyped the name must hear so.
        if not await store.is_local_domain(domain):
            return False
        await store.remove_domain(domain)
        return True

    if not run_with_store(config, act):
        fail(f"no local domain {domain}")
    console.print(f"domain [bold]{domain}[/] removed")


@account_app.command("add")
def account_add(
    address: str,
    config: ConfigOpt,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Create an account ADDRESS; prints a generated password unless --password-stdin."""
    addr = _address(address)
    password = _new_password(password_stdin)

    async def act(store: Store, _: Settings) -> None:
        if not await store.is_local_domain(addr.domain):
            fail(f"{addr.domain} is not a local domain (add it with `mailprime domain add`)", 2)
        await store.add_account(str(addr), hash_password(password))

    run_with_store(config, act)
    console.print(f"account [bold]{addr}[/] created")
    _show_generated(password, password_stdin)


@account_app.command("list")
def account_list(config: ConfigOpt) -> None:
    """List accounts."""

    async def act(store: Store, _: Settings) -> list[tuple[str, str, str]]:
        return [(a.address, a.created_at.strftime("%Y-%m-%d %H:%M"), "yes" if a.disabled else "")
                for a in await store.list_accounts()]

    table = Table("address", "created (UTC)", "disabled")
    for row in run_with_store(config, act):
        table.add_row(*row)
    console.print(table)


@account_app.command("passwd")
def account_passwd(
    address: str,
    config: ConfigOpt,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Set a new password for ADDRESS (generated and printed unless --password-stdin)."""
    addr = _address(address)
    password = _new_password(password_stdin)

    async def act(store: Store, _: Settings) -> None:
        await store.set_password(addr.key, hash_password(password))

    run_with_store(config, act)
    console.print(f"password of [bold]{addr}[/] changed")
    _show_generated(password, password_stdin)


@account_app.command("remove")
def account_remove(address: str, config: ConfigOpt) -> None:
    """Delete the account ADDRESS and its mailboxes."""
    addr = _address(address)

    async def act(store: Store, _: Settings) -> None:
        await store.remove_account(addr.key)

    run_with_store(config, act)
    console.print(f"account [bold]{addr}[/] removed")


@alias_app.command("add")
def alias_add(source: str, destination: str, config: ConfigOpt) -> None:
    """Forward SOURCE (an address, or @domain for a catch-all) to DESTINATION."""
    src = _alias_source(source)
    dst = str(_address(destination))

    async def act(store: Store, _: Settings) -> None:
        await store.add_alias(src, dst)

    run_with_store(config, act)
    console.print(f"alias [bold]{src}[/] -> {dst} added")


@alias_app.command("list")
def alias_list(config: ConfigOpt) -> None:
    """List aliases."""

    async def act(store: Store, _: Settings) -> list[tuple[str, str]]:
        return [(a.source, a.destination) for a in await store.list_aliases()]

    table = Table("source", "destination")
    for row in run_with_store(config, act):
        table.add_row(*row)
    console.print(table)


@alias_app.command("remove")
def alias_remove(
    source: str,
    config: ConfigOpt,
    destination: Annotated[str | None, typer.Argument(help="Remove only this destination.")] = None,
) -> None:
    """Remove the alias SOURCE (all its destinations, or just DESTINATION)."""

    key = _alias_source(source)
    dst = str(_address(destination)) if destination is not None else None

    async def act(store: Store, _: Settings) -> bool:
        # The store's removal is idempotent; an operator who mistyped the alias must hear so.
        if not any(a.source == key and dst in (None, a.destination)
                   for a in await store.list_aliases()):
            return False
        await store.remove_alias(key, dst)
        return True

    if not run_with_store(config, act):
        fail(f"no alias {key}" + (f" -> {dst}" if dst else ""))
    console.print(f"alias [bold]{key}[/] removed" + (f" (-> {dst})" if dst else ""))
