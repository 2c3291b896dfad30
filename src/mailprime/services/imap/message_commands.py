"""The IMAP commands on messages of the selected mailbox: FETCH, STORE, SEARCH, COPY, MOVE,
EXPUNGE, UID EXPUNGE (RFC 3501 6.4, RFC 9051 6.4, RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 7162
CONDSTORE, RFC 4731 ESEARCH).

The mechanics of FETCH items and SEARCH keys live in `fetch` and `search`; these handlers own
the command semantics: sequence numbers or UIDs, \\Seen set by FETCH only in a read-write
mailbox (RFC 3501 6.4.5), CONDSTORE's CHANGEDSINCE / UNCHANGEDSINCE, UIDPLUS's COPYUID, and the
answers' shapes. Untagged updates from other sessions are added by the session before the
tagged response (see `session.py`).
"""

from __future__ import annotations

from mailprime.domain.errors import NotFound
from mailprime.domain.ids import MailboxId
from mailprime.domain.mail import FlagMode, StoredMessage
from mailprime.proto.imap.types import (
    Atom,
    Copy,
    Fetch,
    FetchItem,
    Move,
    ParenList,
    ResponseCode,
    ResponseStatus,
    Search,
    SearchAnd,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SequenceSet,
    Store,
    StoreMode,
    String,
    UidExpunge,
    Untagged,
    UntaggedStatus,
    Value,
    ok,
    search_response,
    sequence_atom,
)
from mailprime.services.imap.context import CommandFailed, Responses, SessionContext
from mailprime.services.imap.fetch import UnknownCte, plan_fetch, prefetch, sets_seen
from mailprime.services.imap.mailboxes import normalize
from mailprime.services.imap.search import esearch_values, search
from mailprime.services.imap.view import BadSequence, MailboxView

SEEN = "\\Seen"
_FETCH = Atom("FETCH")
_MODES = {StoreMode.ADD: FlagMode.ADD, StoreMode.REMOVE: FlagMode.REMOVE,
          StoreMode.REPLACE: FlagMode.REPLACE}


def _resolve(view: MailboxView, sequence: SequenceSet, uid: bool) -> list[StoredMessage]:
    try:
        messages = view.resolve(sequence, uid=uid)
    except BadSequence as exc:
        raise CommandFailed(str(exc), bad=True) from None
    return [m for m in messages if not view.is_vanished(m.uid)]


def _writable(view: MailboxView, what: str) -> None:
    if view.read_only:  # RFC 3501 6.3.2: EXAMINE opens read-only; no changes at all
        raise CommandFailed(f"{what} is not allowed: the mailbox is read-only (EXAMINE)", "CANNOT")


# FETCH ----------------------------------------------------------------------------------------


async def fetch(ctx: SessionContext, tag: str, command: Fetch) -> Responses:
    view = ctx.require_view()
    attributes = command.attributes
    if command.changed_since is not None and FetchItem.MODSEQ not in attributes:
        attributes = (*attributes, FetchItem.MODSEQ)  # RFC 7162 3.1.4.1: implied by CHANGEDSINCE
    if FetchItem.MODSEQ in attributes:
        ctx.condstore = True  # RFC 7162 3.1: CONDSTORE-enabling
    try:
        targets = view.resolve_numbered(command.sequence, uid=command.uid)
    except BadSequence as exc:
        raise CommandFailed(str(exc), bad=True) from None
    if command.changed_since is not None:
        targets = [(seq, m) for seq, m in targets if m.modseq > command.changed_since]
    newly_seen: set[int] = set()
    if sets_seen(attributes) and not view.read_only:
        # RFC 3501 6.4.5: BODY[...] (not PEEK), RFC822 and RFC822.TEXT set \Seen; only in a
        # read-write mailbox (EXAMINE never changes anything, RFC 3501 6.3.2).
        unseen = [m.uid for _, m in targets if SEEN not in m.flags and not view.is_vanished(m.uid)]
        if unseen:
            change = await ctx.store.store_flags(view.mailbox.id, unseen, FlagMode.ADD,
                                                 frozenset({SEEN}))
            for response in view.update(change.changed):
                yield response
            newly_seen = {m.uid for m in change.changed}
    # The flags that changed are reported in the same FETCH (RFC 3501 6.4.5), with MODSEQ once
    # CONDSTORE is on (RFC 7162 3.1.4).
    extra: tuple[FetchItem, ...] = tuple(
        item for item, wanted in ((FetchItem.FLAGS, FetchItem.FLAGS not in attributes),
                                  (FetchItem.MODSEQ, ctx.condstore and FetchItem.MODSEQ not in attributes))
        if wanted)
    plan = plan_fetch(attributes, include_uid=command.uid)
    seen_plan = plan_fetch(attributes + extra, include_uid=command.uid) if newly_seen else plan
    cache, store, rev2 = ctx.res.cache, ctx.store, ctx.rev2
    lost = False
    prefetched = 0  # targets before this index were considered for a batch read already
    for index, (seq, target) in enumerate(targets):
        if (plan.need and index >= prefetched and not cache.holds(target.blob_id, target.size)
                and plan.loads_whole(target)):
            prefetched = await prefetch(plan, targets, index, cache=cache, store=store,
                                        mailbox_id=view.mailbox.id)
        if newly_seen and target.uid in newly_seen:
            message, target_plan = view.message(target.uid), seen_plan  # its flags changed
        else:
            message, target_plan = target, plan
        try:
            items = await target_plan.items(message, cache=cache, store=store, rev2=rev2)
        except NotFound:
            # Expunged by another session, content already gone: RFC 5530 EXPUNGEISSUED.
            lost = True
            continue
        except UnknownCte as exc:
            raise CommandFailed(str(exc) or "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE") from None
        yield Untagged((seq, _FETCH, ParenList(items)))
    if lost:
        yield ok(tag, "Some messages were expunged meanwhile", ResponseCode("EXPUNGEISSUED"))
    else:
        yield ok(tag, "FETCH completed")


# STORE ----------------------------------------------------------------------------------------


async def store(ctx: SessionContext, tag: str, command: Store) -> Responses:
    view = ctx.require_view()
    _writable(view, "STORE")
    if command.unchanged_since is not None:
        ctx.condstore = True  # RFC 7162 3.1
    targets = _resolve(view, command.sequence, command.uid)
    flags = frozenset(f for f in command.flags if f != "\\Recent")  # \Recent cannot be stored
    mode = _MODES[command.mode]
    change = await ctx.store.store_flags(view.mailbox.id, [m.uid for m in targets], mode, flags,
                                         unchanged_since=command.unchanged_since)
    # Rows whose flags are not what this STORE alone makes of what the client knew: another
    # session changed them too. .SILENT does not hide that (RFC 3501 6.4.6).
    others = {m.uid for m in change.changed
              if m.flags != _applied(mode, view.message(m.uid).flags, flags)}
    for response in view.update(change.changed):
        yield response
    modified = set(change.modified)
    changed = {m.uid for m in change.changed}
    for target in targets:
        if target.uid in modified:
            continue
        message = view.message(target.uid)
        if not command.silent or target.uid in others:
            # RFC 3501 6.4.6: the new flags of each message; UID STORE adds UID (RFC 9051 6.4.9),
            # CONDSTORE adds MODSEQ (RFC 7162 3.1.3).
            yield view.flag_fetch(message, include_uid=command.uid, include_modseq=ctx.condstore)
        elif ctx.condstore and target.uid in changed:
            # RFC 7162 3.1.3: even .SILENT reports the new MODSEQ of the messages it changed.
            items: list[Value] = [Atom("UID"), message.uid] if command.uid else []
            items += [Atom("MODSEQ"), ParenList((message.modseq,))]
            yield Untagged((view.seq(message.uid), Atom("FETCH"), ParenList(tuple(items))))
    if modified:
        # RFC 7162 3.1.3: the messages not changed because they changed after UNCHANGEDSINCE.
        numbers = sorted(modified) if command.uid else sorted(view.seq(u) for u in modified)
        yield ok(tag, "Conditional STORE failed for some messages",
                 ResponseCode("MODIFIED", (sequence_atom(numbers),)))
    else:
        yield ok(tag, "STORE completed")


def _applied(mode: FlagMode, current: frozenset[str], flags: frozenset[str]) -> frozenset[str]:
    if mode is FlagMode.ADD:
        return current | flags
    if mode is FlagMode.REMOVE:
        return current - flags
    return flags


# SEARCH ---------------------------------------------------------------------------------------


def _uses_modseq(key: SearchKey) -> bool:
    if isinstance(key, SearchModSeq):
        return True
    if isinstance(key, SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, SearchOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, SearchAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False


async def search_command(ctx: SessionContext, tag: str, command: Search) -> Responses:
    view = ctx.require_view()
    with_modseq = _uses_modseq(command.key)
    if with_modseq:
        ctx.condstore = True  # RFC 7162 3.1
    messages = view.messages()
    found = await search(command.key, messages, cache=ctx.res.cache, store=ctx.store,
                         largest_seq=len(messages))
    numbers = [view.uid(n) for n in found] if command.uid else list(found)
    # RFC 7162 3.1.5: with a MODSEQ key, the highest mod-sequence of the messages found.
    highest = max((messages[n - 1].modseq for n in found), default=None) if with_modseq else None
    if command.return_options is None and not ctx.rev2:
        yield search_response(tuple(numbers), highest)
    else:
        # RFC 4731 / RFC 9051 6.4.4: ESEARCH, correlated by tag; no options means ALL, and an
        # IMAP4rev2 client gets ESEARCH for a plain SEARCH too.
        options = command.return_options or ("ALL",)
        values: list[Value] = [ParenList((Atom("TAG"), String(tag)))]
        if command.uid:
            values.append(Atom("UID"))
        values += esearch_values(numbers, options)
        if highest is not None:
            values += [Atom("MODSEQ"), highest]
        yield Untagged((Atom("ESEARCH"), *values))
    yield ok(tag, "SEARCH completed")


# COPY / MOVE ----------------------------------------------------------------------------------


async def _destination(ctx: SessionContext, name: str) -> MailboxId:
    box = await ctx.store.get_mailbox(ctx.require_account().id, normalize(name))
    if box is None:  # RFC 3501 6.4.7: TRYCREATE tells the client that CREATE would help
        raise CommandFailed("Destination mailbox does not exist", "TRYCREATE")
    return box.id


def _copyuid(uidvalidity: int, pairs: tuple[tuple[int, int], ...]) -> ResponseCode:
    """RFC 4315 3: COPYUID uidvalidity source-uids destination-uids, in matching order."""
    return ResponseCode("COPYUID", (uidvalidity, sequence_atom([s for s, _ in pairs]),
                                    sequence_atom([d for _, d in pairs])))


async def copy(ctx: SessionContext, tag: str, command: Copy) -> Responses:
    view = ctx.require_view()
    account = ctx.require_account()
    targets = _resolve(view, command.sequence, command.uid)
    destination = await _destination(ctx, command.mailbox)
    quota = ctx.config.quota
    if quota.limited and targets:
        refusal = quota.refusal(await ctx.store.account_usage(account.id),
                                adding_octets=sum(m.size for m in targets),
                                adding_messages=len(targets))
        if refusal is not None:
            raise CommandFailed(refusal, "OVERQUOTA")
    result = await ctx.store.copy_messages(view.mailbox.id, [m.uid for m in targets],
                                           destination)
    code = _copyuid(result.uidvalidity, result.uid_pairs) if result.uid_pairs else None
    yield ok(tag, "COPY completed", code)


async def move(ctx: SessionContext, tag: str, command: Move) -> Responses:
    view = ctx.require_view()
    _writable(view, "MOVE")
    targets = _resolve(view, command.sequence, command.uid)
    destination = await _destination(ctx, command.mailbox)
    if destination == view.mailbox.id:
        raise CommandFailed("Cannot move messages into the mailbox they are in", "CANNOT")
    result = await ctx.store.copy_messages(view.mailbox.id, [m.uid for m in targets],
                                           destination, move=True)
    if result.uid_pairs:
        # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs (which the session's
        # update, sent before the tagged OK, carries: the source rows are gone).
        yield UntaggedStatus(ResponseStatus.OK, "Moved", _copyuid(result.uidvalidity, result.uid_pairs))
    yield ok(tag, "MOVE completed")


# EXPUNGE --------------------------------------------------------------------------------------


async def expunge(ctx: SessionContext, tag: str) -> Responses:
    view = ctx.require_view()
    _writable(view, "EXPUNGE")
    await ctx.store.expunge(view.mailbox.id)
    yield ok(tag, "EXPUNGE completed")  # the `* n EXPUNGE` lines come with the update


async def uid_expunge(ctx: SessionContext, tag: str, command: UidExpunge) -> Responses:
    view = ctx.require_view()
    _writable(view, "EXPUNGE")
    targets = _resolve(view, command.uids, True)
    if targets:
        await ctx.store.expunge(view.mailbox.id, [m.uid for m in targets])
    yield ok(tag, "UID EXPUNGE completed")
