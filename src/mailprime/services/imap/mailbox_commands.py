"""The IMAP commands about mailboxes as a whole: SELECT/EXAMINE, CREATE, DELETE, RENAME,
SUBSCRIBE/UNSUBSCRIBE, LIST/LSUB, STATUS, NAMESPACE and the QUOTA commands (RFC 3501 6.3,
RFC 9051 6.3, RFC 5258, RFC 5819, RFC 6154, RFC 7162, RFC 9208).

Each handler is an async generator of responses ending with the tagged one; a refusal is a
`CommandFailed` (the session turns it into the tagged NO/BAD).
"""

from __future__ import annotations

import contextlib

from mailprime.domain.errors import AlreadyExists, NotFound
from mailprime.domain.mail import Mailbox, MailboxStatus
from mailprime.proto.imap.types import (
    NIL,
    STATUS_ITEMS,
    Atom,
    Create,
    Delete,
    Flag,
    GetQuota,
    GetQuotaRoot,
    List,
    Lsub,
    MailboxName,
    ParenList,
    Rename,
    ResponseCode,
    ResponseStatus,
    Status,
    String,
    Untagged,
    UntaggedStatus,
    Value,
    exists,
    flags_response,
    list_response,
    no,
    ok,
    recent,
)
from mailprime.services.imap.context import CommandFailed, Responses, SessionContext
from mailprime.services.imap.mailboxes import (
    DELIMITER,
    INBOX,
    ListQuery,
    canonical_pattern,
    has_children,
    invalid_name,
    is_inferior,
    list_entries,
    lsub_entries,
    normalize,
    parents,
)
from mailprime.services.imap.quota import ROOT
from mailprime.services.imap.view import MailboxView

# RFC 6154 2: the special-use attributes a mailbox can carry (CREATE ... USE, RFC 6154 3).
SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")


def _code(name: str, *args: Value) -> ResponseCode:
    return ResponseCode(name, args)


async def _existing(ctx: SessionContext, name: str) -> Mailbox:
    box = await ctx.store.get_mailbox(ctx.require_account().id, normalize(name))
    if box is None:
        raise CommandFailed("Mailbox does not exist", "NONEXISTENT")
    return box


# SELECT / EXAMINE -----------------------------------------------------------------------------


async def select(ctx: SessionContext, tag: str, name: str, *, read_only: bool,
                 condstore: bool) -> Responses:
    """RFC 9051 6.3.2: a SELECT ends the current selection first, even when it then fails;
    RFC 7162 3.2.11 / RFC 9051 7.1: that is said with `* OK [CLOSED]`."""
    if ctx.view is not None:
        ctx.view = None
        yield UntaggedStatus(ResponseStatus.OK, "Previous mailbox closed", _code("CLOSED"))
    if condstore:
        ctx.condstore = True  # RFC 7162 3.1.8
    box = await _existing(ctx, name)
    view = await MailboxView.open(ctx.store, box, read_only, ctx.res.mailboxes)
    ctx.view = view
    flags = view.flags()
    yield flags_response(flags)
    permanent = () if read_only else (*flags, "\\*")
    yield UntaggedStatus(ResponseStatus.OK, "Flags permitted",
                         _code("PERMANENTFLAGS", ParenList(tuple(Flag(f) for f in permanent))))
    yield exists(view.count)
    if not ctx.rev2:  # RFC 9051 removed \Recent and UNSEEN from SELECT (appendix E)
        yield recent(0)
        unseen = view.first_unseen()
        if unseen is not None:
            yield UntaggedStatus(ResponseStatus.OK, "First unseen", _code("UNSEEN", unseen))
    yield UntaggedStatus(ResponseStatus.OK, "UIDs valid", _code("UIDVALIDITY", box.uidvalidity))
    yield UntaggedStatus(ResponseStatus.OK, "Predicted next UID", _code("UIDNEXT", view.uidnext))
    # RFC 7162 3.1.2.1: sent on every SELECT/EXAMINE by a server with persistent modseqs.
    yield UntaggedStatus(ResponseStatus.OK, "Highest", _code("HIGHESTMODSEQ", view.known_modseq))
    if ctx.rev2:  # RFC 9051 6.3.2: the mailbox's LIST data, with its name as the server has it
        yield list_response((), DELIMITER, view.mailbox.name)
    mode = "READ-ONLY" if read_only else "READ-WRITE"
    yield ok(tag, f"{'EXAMINE' if read_only else 'SELECT'} completed", _code(mode))


# CREATE / DELETE / RENAME / SUBSCRIBE ---------------------------------------------------------


async def _create_parents(ctx: SessionContext, name: str, existing: set[str]) -> None:
    """RFC 3501 6.3.3: superiors of a new name are created if they do not exist."""
    account = ctx.require_account()
    for parent in parents(name):
        if parent not in existing:
            with contextlib.suppress(AlreadyExists):  # made meanwhile elsewhere: as good
                await ctx.store.create_mailbox(account.id, parent)
            existing.add(parent)


async def create(ctx: SessionContext, tag: str, command: Create) -> Responses:
    account = ctx.require_account()
    name = normalize(command.mailbox)
    problem = invalid_name(name)
    if problem is not None:
        raise CommandFailed(problem, "CANNOT")
    special: str | None = None
    if command.special_use:
        known = {u.lower(): u for u in SPECIAL_USES}
        uses = {known.get(u.lower(), u) for u in command.special_use}
        if len(uses) > 1 or not uses <= set(SPECIAL_USES):
            # RFC 6154 3: USEATTR when the attribute is unknown or cannot be combined.
            raise CommandFailed("Only one of " + " ".join(SPECIAL_USES) + " can be given", "USEATTR")
        special = uses.pop()
    names = {m.name for m in await ctx.store.list_mailboxes(account.id)}
    if name in names:
        raise CommandFailed("Mailbox already exists", "ALREADYEXISTS")
    await _create_parents(ctx, name, names)
    try:
        await ctx.store.create_mailbox(account.id, name, special)
    except AlreadyExists:
        raise CommandFailed("Mailbox already exists", "ALREADYEXISTS") from None
    yield ok(tag, "CREATE completed")


async def delete(ctx: SessionContext, tag: str, command: Delete) -> Responses:
    account = ctx.require_account()
    name = normalize(command.mailbox)
    if name == INBOX:  # RFC 3501 6.3.4
        raise CommandFailed("INBOX cannot be deleted", "CANNOT")
    box = await _existing(ctx, name)
    names = {m.name for m in await ctx.store.list_mailboxes(account.id)}
    if has_children(name, names):
        # RFC 9051 6.3.4: a mailbox with inferiors is not deleted (rev1 would keep it as a
        # \Noselect name; rev2 refuses, which leaves no half-existing names behind).
        raise CommandFailed("Mailbox has children; delete them first", "HASCHILDREN")
    if ctx.view is not None and ctx.view.mailbox.id == box.id:
        ctx.view = None
        yield UntaggedStatus(ResponseStatus.OK, "Selected mailbox deleted", _code("CLOSED"))
    try:
        await ctx.store.delete_mailbox(account.id, name)
    except NotFound:
        raise CommandFailed("Mailbox does not exist", "NONEXISTENT") from None
    yield ok(tag, "DELETE completed")


async def rename(ctx: SessionContext, tag: str, command: Rename) -> Responses:
    account = ctx.require_account()
    old, new = normalize(command.old), normalize(command.new)
    problem = invalid_name(new)
    if problem is not None:
        raise CommandFailed(problem, "CANNOT")
    await _existing(ctx, old)
    names = {m.name for m in await ctx.store.list_mailboxes(account.id)}
    if new in names or new == INBOX:
        raise CommandFailed("A mailbox with the new name already exists", "ALREADYEXISTS")
    if is_inferior(new, old):
        raise CommandFailed("A mailbox cannot be moved into itself", "CANNOT")
    await _create_parents(ctx, new, names)
    try:
        await ctx.store.rename_mailbox(account.id, old, new)
    except AlreadyExists:
        raise CommandFailed("A mailbox with the new name already exists", "ALREADYEXISTS") from None
    yield ok(tag, "RENAME completed")


async def subscribe(ctx: SessionContext, tag: str, name: str, subscribed: bool) -> Responses:
    box = await _existing(ctx, name)
    await ctx.store.set_subscribed(ctx.require_account().id, box.name, subscribed)
    yield ok(tag, f"{'SUBSCRIBE' if subscribed else 'UNSUBSCRIBE'} completed")


# LIST / LSUB / STATUS / NAMESPACE -------------------------------------------------------------


def _root_of(reference: str) -> str:
    """RFC 3501 6.3.8: LIST ref "" returns the root of the reference and the delimiter."""
    head, sep, _ = reference.partition(DELIMITER)
    return head + sep if sep else ""


async def list_mailboxes(ctx: SessionContext, tag: str, command: List) -> Responses:
    account = ctx.require_account()
    if all(p == "" for p in command.patterns) and not command.select_options:
        yield list_response(("\\Noselect",), DELIMITER, _root_of(command.reference))
        yield ok(tag, "LIST completed")
        return
    returns = command.return_options
    query = ListQuery(
        patterns=tuple(canonical_pattern(command.reference, p) for p in command.patterns),
        subscribed_only="SUBSCRIBED" in command.select_options,
        recursive_match="RECURSIVEMATCH" in command.select_options,
        special_use_only="SPECIAL-USE" in command.select_options,
        return_subscribed=returns.subscribed,
    )
    if query.recursive_match and not (query.subscribed_only or query.special_use_only):
        # RFC 5258 3.1: RECURSIVEMATCH must come with another selection option.
        raise CommandFailed("RECURSIVEMATCH needs another selection option", bad=True)
    items = [i.upper() for i in returns.status or ()]
    if any(i not in STATUS_ITEMS for i in items):
        raise CommandFailed("Unknown STATUS item", bad=True)
    for entry in list_entries(await ctx.store.list_mailboxes(account.id), query):
        yield list_response(entry.attributes, DELIMITER, entry.name, entry.extra)
        if items and entry.mailbox is not None:  # RFC 5819 2: after the mailbox's LIST line
            yield _status_response(ctx, entry.mailbox.name,
                                   await ctx.store.mailbox_status(entry.mailbox.id), items)
    yield ok(tag, "LIST completed")


async def lsub(ctx: SessionContext, tag: str, command: Lsub) -> Responses:
    account = ctx.require_account()
    if command.pattern == "":
        yield Untagged((Atom("LSUB"), ParenList((Flag("\\Noselect"),)), String(DELIMITER),
                        MailboxName(_root_of(command.reference))))
    else:
        pattern = canonical_pattern(command.reference, command.pattern)
        for entry in lsub_entries(await ctx.store.list_mailboxes(account.id), pattern):
            yield Untagged((Atom("LSUB"), ParenList(tuple(Flag(a) for a in entry.attributes)),
                            String(DELIMITER), MailboxName(entry.name)))
    yield ok(tag, "LSUB completed")


def _status_response(ctx: SessionContext, name: str, status: MailboxStatus,
                     items: list[str]) -> Untagged:
    box = status.mailbox
    values = {
        "MESSAGES": status.messages,
        "RECENT": 0,  # no \Recent (RFC 9051 removed it; a rev1 client takes 0)
        "UIDNEXT": box.uidnext,
        "UIDVALIDITY": box.uidvalidity,
        "UNSEEN": status.unseen,
        "DELETED": status.deleted,  # RFC 9051 6.3.11
        "SIZE": status.size,  # RFC 8438
        "HIGHESTMODSEQ": box.highestmodseq,  # RFC 7162 3.1.6
    }
    if "HIGHESTMODSEQ" in items:
        ctx.condstore = True  # RFC 7162 3.1: a CONDSTORE-enabling command
    flat: list[Value] = []
    for item in items:
        flat += [Atom(item), values[item]]
    return Untagged((Atom("STATUS"), MailboxName(name), ParenList(tuple(flat))))


async def status(ctx: SessionContext, tag: str, command: Status) -> Responses:
    items = [i.upper() for i in command.items]
    if not items or any(i not in STATUS_ITEMS for i in items):
        raise CommandFailed("Unknown STATUS item", bad=True)
    box = await _existing(ctx, command.mailbox)
    yield _status_response(ctx, box.name, await ctx.store.mailbox_status(box.id), items)
    yield ok(tag, "STATUS completed")


async def namespace(ctx: SessionContext, tag: str) -> Responses:
    """RFC 2342: one personal namespace, the root, with "/" as the delimiter."""
    personal = ParenList((ParenList((String(""), String(DELIMITER))),))
    yield Untagged((Atom("NAMESPACE"), personal, NIL, NIL))
    yield ok(tag, "NAMESPACE completed")


# QUOTA (RFC 9208) -------------------------------------------------------------------------------


async def get_quota_root(ctx: SessionContext, tag: str, command: GetQuotaRoot) -> Responses:
    account = ctx.require_account()
    box = await _existing(ctx, command.mailbox)
    quota = ctx.config.quota
    yield quota.quotaroot_response(box.name)
    if quota.limited:
        yield quota.quota_response(await ctx.store.account_usage(account.id))
    yield ok(tag, "GETQUOTAROOT completed")


async def get_quota(ctx: SessionContext, tag: str, command: GetQuota) -> Responses:
    account = ctx.require_account()
    quota = ctx.config.quota
    if command.root != ROOT or not quota.limited:
        raise CommandFailed("No such quota root", "NONEXISTENT")
    yield quota.quota_response(await ctx.store.account_usage(account.id))
    yield ok(tag, "GETQUOTA completed")


async def set_quota(ctx: SessionContext, tag: str) -> Responses:
    """RFC 9208 4.4: only an administrator may change a quota; users cannot."""
    ctx.require_account()
    yield no(tag, "Quotas are set by the administrator", _code("NOPERM"))
