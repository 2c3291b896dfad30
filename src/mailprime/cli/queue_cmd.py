"""`mailprime queue`: look at and steer the outbound queue, like Postfix's postqueue/postsuper."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.clock import SystemClock
from mailprime.domain.ids import QueueId
from mailprime.domain.mail import QueuedMessage, QueueRecipient, RecipientStatus
from mailprime.storage.ports import Store

queue_app = typer.Typer(help="Inspect and manage the outbound queue.", no_args_is_help=True)


@queue_app.command("list")
def queue_list(
    config: ConfigOpt,
    all_: Annotated[bool, typer.Option("--all", help="Include finished messages.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 1000,
) -> None:
    """List queued messages with their pending recipients."""

    async def act(store: Store, _: Settings) -> list[tuple[QueuedMessage, list[QueueRecipient]]]:
        return [(m, list(r)) for m, r in await store.list_queue(limit)]

    rows = run_with_store(config, act)
    table = Table("queue id", "arrived (UTC)", "size", "sender", "recipient", "status", "tries",
                  "next attempt / last reply")
    shown = 0
    for message, recipients in rows:
        for r in recipients:
            if not all_ and r.status is not RecipientStatus.PENDING:
                continue
            detail = r.last_reply if r.status is not RecipientStatus.PENDING else (
                f"{r.next_attempt_at:%H:%M:%S} {r.last_reply}".strip())
            # Addresses and replies come from remote peers: escaped so Rich never reads them
            # as markup.
            table.add_row(message.id, f"{message.created_at:%Y-%m-%d %H:%M:%S}", str(message.size),
                          escape(message.sender or "<>"), escape(r.address), r.status.value,
                          str(r.attempts), escape(detail[:80]))
            shown += 1
    if shown:
        console.print(table)
    else:
        console.print("queue is empty")


@queue_app.command("show")
def queue_show(queue_id: str, config: ConfigOpt) -> None:
    """Show one message: envelope, every recipient's state, and its events."""

    async def act(store: Store, _: Settings) -> tuple[QueuedMessage | None, list[QueueRecipient],
                                                       list[tuple[str, str, str, str]]]:
        msg = await store.get_message(QueueId(queue_id))
        if msg is None:
            return None, [], []
        rcpts = list(await store.get_recipients(QueueId(queue_id)))
        events = [(f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind.value, e.recipient or "", e.detail)
                  for e in await store.list_events(QueueId(queue_id))]
        return msg, rcpts, events

    msg, rcpts, events = run_with_store(config, act)
    if msg is None:
        fail(f"no queued message {queue_id}")
    console.print(f"[bold]{msg.id}[/]  from=<{escape(msg.sender)}>  size={msg.size}  "
                  f"priority={msg.priority.name.lower()}  arrived={msg.created_at:%Y-%m-%d %H:%M:%S}"
                  f"  expires={msg.expires_at:%Y-%m-%d %H:%M:%S}")
    table = Table("recipient", "status", "tries", "next attempt", "last reply")
    for r in rcpts:
        table.add_row(escape(r.address), r.status.value, str(r.attempts),
                      f"{r.next_attempt_at:%Y-%m-%d %H:%M:%S}", escape(r.last_reply))
    console.print(table)
    ev = Table("time (UTC)", "event", "recipient", "detail")
    for row in events:
        ev.add_row(*(escape(cell) for cell in row))
    console.print(ev)


@queue_app.command("retry")
def queue_retry(queue_id: str, config: ConfigOpt) -> None:
    """Make every pending recipient of QUEUE_ID due now."""

    async def act(store: Store, _: Settings) -> int:
        return await store.retry_now(QueueId(queue_id), SystemClock().now())

    n = run_with_store(config, act)
    if n == 0:
        fail(f"no pending recipients for {queue_id}")
    console.print(f"{n} recipient(s) of {queue_id} scheduled for immediate delivery")


@queue_app.command("delete")
def queue_delete(queue_id: str, config: ConfigOpt) -> None:
    """Delete QUEUE_ID from the queue without delivering or bouncing it."""

    async def act(store: Store, _: Settings) -> bool:
        return await store.delete_message(QueueId(queue_id))

    if not run_with_store(config, act):
        fail(f"no queued message {queue_id}")
    console.print(f"{queue_id} deleted")


@queue_app.command("flush")
def queue_flush(config: ConfigOpt) -> None:
    """Make every pending recipient due now (the running server picks them up at once)."""

    async def act(store: Store, _: Settings) -> int:
        return await store.retry_now(None, SystemClock().now())

    n = run_with_store(config, act)
    console.print(f"{n} recipient(s) scheduled for immediate delivery")
