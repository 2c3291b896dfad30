"""APPEND (RFC 3501 6.3.11, RFC 9051 6.3.12, RFC 4315 APPENDUID, RFC 7889 APPENDLIMIT).

Theory of operation. The core reports APPEND when the message literal is announced, before any
of its octets: `begin` decides then, so a message that is too big, over quota or aimed at a
mailbox that does not exist is refused without reading it (the answer is a tagged NO with
TOOBIG, OVERQUOTA or TRYCREATE, and the core never sends "+"). Accepted, the octets stream
into a storage `SpoolWriter` (memory stays bounded whatever the size), and at the end of the
command the message is appended in one durable transaction before `OK [APPENDUID v u]`. A
connection lost in between leaves nothing behind: `abort` discards the spooled octets.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailprime.domain.errors import DomainError
from mailprime.domain.mail import Mailbox
from mailprime.proto.imap.types import Append, Continuation, ResponseCode, Tagged, no, ok
from mailprime.services.imap.context import SessionContext
from mailprime.services.imap.mailboxes import normalize
from mailprime.storage.ports import SpoolWriter


@dataclass(slots=True)
class AppendInProgress:
    tag: str
    mailbox: Mailbox
    command: Append
    writer: SpoolWriter
    failure: str = ""  # the spool failed (disk full): answered at the end


async def begin(ctx: SessionContext, tag: str, command: Append) -> tuple[Continuation | Tagged,
                                                                          AppendInProgress | None]:
    """The answer to the announced literal: "+" (accept) or a tagged NO (refuse)."""
    account = ctx.require_account()
    config = ctx.config
    if command.size > config.max_append:
        return no(tag, f"Message larger than the limit of {config.max_append} octets",
                  ResponseCode("TOOBIG")), None
    if command.size == 0:
        return no(tag, "An empty message cannot be appended", ResponseCode("CANNOT")), None
    box = await ctx.store.get_mailbox(account.id, normalize(command.mailbox))
    if box is None:
        return no(tag, "Mailbox does not exist", ResponseCode("TRYCREATE")), None
    if config.quota.limited:
        refusal = config.quota.refusal(await ctx.store.account_usage(account.id),
                                       adding_octets=command.size, adding_messages=1)
        if refusal is not None:
            return no(tag, refusal, ResponseCode("OVERQUOTA")), None
    progress = AppendInProgress(tag, box, command, ctx.store.new_spool_writer())
    return Continuation("Ready for literal data"), progress


async def write(progress: AppendInProgress, data: bytes) -> None:
    if progress.failure:
        return
    try:
        await progress.writer.write(data)
    except DomainError as exc:  # the writer discarded itself; the rest is read and dropped
        progress.failure = exc.message


async def finish(ctx: SessionContext, progress: AppendInProgress) -> Tagged:
    """Stores the message durably, then answers (RFC 4315 3: APPENDUID)."""
    tag = progress.tag
    if progress.failure:
        await progress.writer.discard()
        return no(tag, "The message could not be stored; try again later", ResponseCode("UNAVAILABLE"))
    command = progress.command
    try:
        content = await progress.writer.finish()
        stored = await ctx.store.append_message(
            progress.mailbox.id, content,
            flags=frozenset(f for f in command.flags if f != "\\Recent"),
            internal_date=command.internal_date)
    finally:
        await progress.writer.discard()  # deletes the spool file unless the append adopted it
    return ok(tag, "APPEND completed",
              ResponseCode("APPENDUID", (progress.mailbox.uidvalidity, stored.uid)))


async def abort(progress: AppendInProgress) -> None:
    await progress.writer.discard()
