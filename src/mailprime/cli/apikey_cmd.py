"""`mailprime apikey create|list|revoke`: keys for the HTTP API (domain.api_keys).

A key is printed once, when it is made; the database keeps only its SHA-256, so a lost key is
revoked and replaced, never recovered. Revoking takes effect on the next request (the API reads
the key's row every time).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.api_keys import (
    RESOURCES,
    ApiKey,
    ApiKeyFormatError,
    check_name,
    check_scopes,
    new_api_key,
)
from mailprime.domain.clock import SystemClock
from mailprime.storage.ports import Store

apikey_app = typer.Typer(help="API keys for the HTTP API: create, list, revoke.",
                         no_args_is_help=True)

SCOPE_HELP = ("A scope the key grants (repeat for more): RESOURCE:ACTION, RESOURCE:* or * (all). "
              "Resources: " + ", ".join(f"{r} ({'/'.join(a)})" for r, a in RESOURCES.items())
              + ". campaigns:send is what makes campaign mail leave (start, resume, test); "
                "campaigns:write creates, changes, pauses and cancels.")


@apikey_app.command("create")
def create(name: Annotated[str, typer.Argument(help="A name to know the key by.")],
           config: ConfigOpt,
           scope: Annotated[list[str], typer.Option("--scope", "-s", help=SCOPE_HELP)]) -> None:
    """Create a key and print it once: it cannot be shown again."""
    try:
        check_name(name)
        scopes = check_scopes(s for item in scope for s in item.split(","))
    except ApiKeyFormatError as exc:
        fail(str(exc), 2)
    made = new_api_key()

    async def act(store: Store, _: Settings) -> ApiKey:
        return await store.add_api_key(name, made.prefix, made.secret_hash, scopes,
                                       SystemClock().now())

    key = run_with_store(config, act)
    console.print(f"created API key [bold]{key.name}[/] (prefix {key.prefix}), "
                  f"scopes: {' '.join(sorted(key.scopes))}")
    console.print(f"key: [bold]{made.text}[/]  (shown once)", soft_wrap=True)


@apikey_app.command("list")
def list_keys(config: ConfigOpt, all_keys: Annotated[bool, typer.Option(
        "--all", help="Revoked keys too.")] = False) -> None:
    """List keys (never their secrets)."""

    async def act(store: Store, _: Settings) -> list[ApiKey]:
        return list(await store.list_api_keys(include_revoked=all_keys))

    keys = run_with_store(config, act)
    table = Table("name", "prefix", "scopes", "created (UTC)", "last used (UTC)", "revoked (UTC)")
    for key in keys:
        table.add_row(key.name, key.prefix, " ".join(sorted(key.scopes)),
                      f"{key.created_at:%Y-%m-%d %H:%M}",
                      f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
                      f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")
    console.print(table)
    console.print(f"{len(keys)} key(s)")


@apikey_app.command("revoke")
def revoke(name_or_prefix: Annotated[str, typer.Argument(help="The key's name or prefix.")],
           config: ConfigOpt) -> None:
    """Revoke a key: requests with it are refused from now on."""

    async def act(store: Store, _: Settings) -> ApiKey:
        return await store.revoke_api_key(name_or_prefix, SystemClock().now())

    key = run_with_store(config, act)
    console.print(f"revoked API key {key.name} (prefix {key.prefix})")
