"""`mailprime retention run`: delete events and finished queue messages past their retention
period (`[marketing] event_retention_days`, `message_retention_days`; marketing.retention)."""

from __future__ import annotations

import typer

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, run_with_store
from mailprime.config import Settings
from mailprime.domain.clock import SystemClock
from mailprime.marketing.retention import RetentionResult, run_retention
from mailprime.storage.ports import Store

retention_app = typer.Typer(help="Data retention: delete old events and delivered messages.",
                            no_args_is_help=True)


@retention_app.command("run")
def run(config: ConfigOpt) -> None:
    """Delete events and finished queue messages older than their retention period now."""
    async def act(store: Store, settings: Settings) -> RetentionResult:
        return await run_retention(store, now=SystemClock().now(),
                                   event_days=settings.marketing.event_retention_days,
                                   message_days=settings.marketing.message_retention_days)

    r = run_with_store(config, act)
    for what, n, cutoff in (("events", r.events, r.event_cutoff),
                            ("finished queue messages", r.messages, r.message_cutoff)):
        if cutoff is None:
            console.print(f"{what}: kept for ever (retention 0)")
        else:
            console.print(f"{what}: {n:,} deleted (older than {cutoff:%Y-%m-%d %H:%M} UTC)")
