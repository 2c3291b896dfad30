"""Shared plumbing of the CLI commands: finding the config, opening the store, printing errors."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mailprime.config import Settings, load_settings
from mailprime.domain.errors import DomainError
from mailprime.storage.ports import Store

T = TypeVar("T")
# When piped (grep, awk), Rich would wrap tables at 80 columns and cut queue ids; use a wide,
# uncoloured console then, so one row stays one line.
console = Console() if sys.stdout.isatty() else Console(width=400, no_color=True)
err_console = Console(stderr=True)

DEFAULT_CONFIG = "var/mailprime.toml"


def config_option() -> str:
    return os.environ.get("MAILPRIME_CONFIG", DEFAULT_CONFIG)


def fail(message: str, code: int = 1) -> NoReturn:
    # Escaped: messages quote config keys such as "[delivery] mx_port", which Rich would
    # otherwise take for markup and silently drop.
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def settings_from(config: str) -> Settings:
    if not Path(config).exists():
        fail(f"config file {config} not found (run `mailprime init` first, or pass --config)", 2)
    try:
        return load_settings(config)
    except DomainError as exc:
        fail(exc.message, 2)


@asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[Store]:
    # Imported here: SQLAlchemy is most of the CLI's start-up time, and `--help` never needs it.
    from mailprime.storage.sql import open_store  # noqa: PLC0415

    store = await open_store(settings.database_url, spool_dir=settings.spool_path,
                             inline_max=settings.storage.inline_max,
                             max_queue_lifetime=settings.delivery.max_queue_lifetime)
    try:
        yield store
    finally:
        await store.close()


def run_with_store(config: str, action: Callable[[Store, Settings], Awaitable[T]]) -> T:
    settings = settings_from(config)

    async def main() -> T:
        async with opened_store(settings) as store:
            return await action(store, settings)

    try:
        return asyncio.run(main())
    except DomainError as exc:
        fail(exc.message)


def read_password_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        fail("no password on standard input")
    return password
