"""Per-command argument parsing and the table of commands valid in each state
(RFC 3501 6 and 9, RFC 9051 6 and 9, and the extensions named beside each parser).

`command_head` reads the command name after the tag, so the core can refuse an unknown or
out-of-state command before any literal is read; `parse_command` reads the arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailprime.proto.imap.command_types import (
    Append,
    Authenticate,
    BinarySection,
    BinarySize,
    BodySection,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchItem,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListReturn,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    Partial,
    Rename,
    Section,
    Select,
    SetQuota,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    UidExpunge,
    Unselect,
    Unsubscribe,
)
from mailprime.proto.imap.events import State
from mailprime.proto.imap.parser import RECENT, SYSTEM_FLAGS, ParseError, Reader
from mailprime.proto.imap.search_parser import parse_search

_ANY = frozenset(State) - {State.LOGOUT}
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

# RFC 3501 6.1-6.4 / RFC 9051 6.1-6.4: where each command is valid.
VALID_STATES: dict[str, frozenset[State]] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "ID"), _ANY),
    **dict.fromkeys(("STARTTLS", "AUTHENTICATE", "LOGIN"), _NOT_AUTH),
    **dict.fromkeys(
        ("SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB",
         "NAMESPACE", "STATUS", "APPEND", "IDLE", "ENABLE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA"),
        _AUTH,
    ),
    **dict.fromkeys(("CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
                     "UID"), _SELECTED),
}
UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"})

# RFC 9051 6.3.11 and RFC 7162 3.1.6 (HIGHESTMODSEQ): the STATUS items understood.
STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                          "HIGHESTMODSEQ"})
# RFC 5258 3.1 and RFC 6154 2: LIST selection options.
LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
# RFC 6154 2 (and RFC 8457 \Important): special-use attributes, canonical case.
SPECIAL_USE = {a.upper(): a for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                                      "\\Trash", "\\Important")}
# RFC 2971 3.3: at most 30 field-value pairs.
MAX_ID_PAIRS = 30


@dataclass(frozen=True, slots=True)
class CommandHead:
    tag: str
    name: str  # upper case: "FETCH" for both FETCH and UID FETCH
    uid: bool


def command_head(r: Reader, tag: str, state: State) -> CommandHead:
    """The command name after the tag; refuses unknown commands and those not valid in `state`."""
    r.sp()
    name = r.keyword()
    if name not in VALID_STATES:
        raise ParseError(f"unknown command {name}")
    uid = name == "UID"
    if uid:
        r.sp()
        name = r.keyword()
        if name not in UID_COMMANDS:
            raise ParseError(f"unknown UID command {name}")
    if state not in VALID_STATES[name]:
        raise ParseError(f"{'UID ' if uid else ''}{name} not valid in this state")
    if name == "EXPUNGE" and uid:
        name = "UID EXPUNGE"
    return CommandHead(tag, name, uid)


def parse_command(r: Reader, head: CommandHead) -> Command:
    """The arguments after the head, up to the end of the command."""
    parse = _PARSERS[head.name]
    command = parse(r, head.uid)
    r.expect_end()
    return command


def _no_args(make: Callable[[], Command]) -> Callable[[Reader, bool], Command]:
    def parse(r: Reader, uid: bool) -> Command:
        if not r.at_end():
            raise ParseError("this command takes no arguments")
        return make()
    return parse


# Not authenticated ----------------------------------------------------------------------------


def _authenticate(r: Reader, uid: bool) -> Command:
    r.sp()
    mechanism = r.keyword()
    initial: bytes | None = None
    if r.maybe_sp():  # SASL-IR (RFC 4959 3): base64, or "=" for an empty response
        initial = r.base64(r.atom("initial response").encode("ascii"))
    return Authenticate(mechanism, initial)


def _login(r: Reader, uid: bool) -> Command:
    r.sp()
    userid = r.astring_str("user name")
    r.sp()
    return Login(userid, r.astring_str("password"))


# Authenticated --------------------------------------------------------------------------------


def _enable(r: Reader, uid: bool) -> Command:
    caps = []
    r.sp()
    caps.append(r.keyword())
    while r.maybe_sp():
        caps.append(r.keyword())
    return Enable(tuple(caps))


def _select_params(r: Reader) -> bool:
    """[SP "(" select-param *(SP select-param) ")"] -> CONDSTORE given (RFC 7162 3.1.8)."""
    if not r.maybe_sp():
        return False
    params = r.paren_atoms()
    for p in params:
        if p != "CONDSTORE":
            raise ParseError(f"unsupported select parameter {p}")
    return bool(params)


def _select(r: Reader, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    return Select(mailbox, _select_params(r))


def _examine(r: Reader, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    return Examine(mailbox, _select_params(r))


def _create(r: Reader, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    uses: list[str] = []
    if r.maybe_sp():  # RFC 6154 3: "(" "USE" SP "(" [use-attr *(SP use-attr)] ")" ")"
        r.char(b"(")
        r.expect_keyword("USE")
        r.sp()
        uses = [SPECIAL_USE.get(f.upper(), f) for f in r.flag_list()]
        r.char(b")")
    return Create(mailbox, tuple(uses))


def _mailbox_only(make: Callable[[str], Command]) -> Callable[[Reader, bool], Command]:
    def parse(r: Reader, uid: bool) -> Command:
        r.sp()
        return make(r.mailbox())
    return parse


def _rename(r: Reader, uid: bool) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(old, r.mailbox())


def _status_items(r: Reader) -> tuple[str, ...]:
    items = r.paren_atoms()
    if not items:
        raise ParseError("STATUS needs at least one item")
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseError(f"unknown STATUS item {item}")
    return tuple(dict.fromkeys(items))


def _list(r: Reader, uid: bool) -> Command:
    """RFC 3501 6.3.8 with RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 5819 LIST-STATUS."""
    r.sp()
    select: list[str] = []
    if r.peek() == ord("("):
        select = r.paren_atoms()
        for option in select:
            if option not in LIST_SELECT:
                raise ParseError(f"unknown LIST selection option {option}")
        # RFC 5258 3.1: RECURSIVEMATCH alone is an error.
        if "RECURSIVEMATCH" in select and len(set(select) - {"RECURSIVEMATCH", "REMOTE"}) == 0:
            raise ParseError("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r.list_mailbox()
    r.sp()
    several = r.peek() == ord("(")  # RFC 5258 3: "(" mbox-or-pat *(SP mbox-or-pat) ")"
    patterns = r.paren_list(r.list_mailbox, empty=False) if several else [r.list_mailbox()]
    returns = ListReturn()
    if r.maybe_sp():
        r.expect_keyword("RETURN")
        r.sp()
        returns = _list_return(r)
    return List(reference, tuple(patterns), frozenset(select), returns)


def _list_return(r: Reader) -> ListReturn:
    r.char(b"(")
    subscribed = children = special_use = False
    status: tuple[str, ...] | None = None
    if not r.maybe_char(b")"):
        while True:
            option = r.keyword()
            if option == "SUBSCRIBED":
                subscribed = True
            elif option == "CHILDREN":
                children = True
            elif option == "SPECIAL-USE":
                special_use = True
            elif option == "STATUS":
                r.sp()
                status = _status_items(r)
            else:
                raise ParseError(f"unknown LIST return option {option}")
            if r.maybe_char(b")"):
                break
            r.sp()
    return ListReturn(subscribed, children, special_use, status)


def _lsub(r: Reader, uid: bool) -> Command:
    r.sp()
    reference = r.list_mailbox()
    r.sp()
    return Lsub(reference, r.list_mailbox())


def _status(r: Reader, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(mailbox, _status_items(r))


def _append(r: Reader, uid: bool) -> Command:
    """APPEND mailbox [SP flag-list] [SP date-time] SP literal (RFC 3501 6.3.11, RFC 3516 4.4).

    Parsed when the message literal is announced: the announcement ends the parse.
    """
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: list[str] = []
    if r.peek() == ord("("):
        flags = _storable_flags(r.flag_list())
        r.sp()
    internal_date = None
    if r.peek() == 0x22:
        internal_date = r.date_time()
        r.sp()
    literal = r.announced_literal()
    return Append(mailbox, frozenset(flags), internal_date, literal.size, literal.binary,
                  literal.synchronizing)


def _storable_flags(flags: list[str]) -> list[str]:
    """RFC 3501 2.3.2: \\Recent cannot be set by a client; other unknown "\\X" flags are refused."""
    for flag in flags:
        if flag.startswith("\\") and flag not in SYSTEM_FLAGS.values():
            if flag == RECENT:
                raise ParseError("\\Recent cannot be stored")
            raise ParseError(f"unknown system flag {flag}")
    return flags


def _id(r: Reader, uid: bool) -> Command:
    """ID ("(" *(string SP nstring) ")" / NIL) (RFC 2971 3.3)."""
    r.sp()
    if r.peek() != ord("("):
        if r.keyword() != "NIL":
            raise ParseError("expected a parameter list or NIL")
        return Id(None)
    r.char(b"(")
    pairs: list[tuple[str, str | None]] = []
    while not r.maybe_char(b")"):
        if pairs:
            r.sp()
        name = r.text(r.string(), "ID field")
        r.sp()
        value = r.nstring()
        pairs.append((name, None if value is None else r.text(value, "ID value")))
        if len(pairs) > MAX_ID_PAIRS:
            raise ParseError("too many ID parameters")
    return Id(tuple(pairs))


def _getquota(r: Reader, uid: bool) -> Command:
    r.sp()
    return GetQuota(r.astring_str("quota root"))


def _setquota(r: Reader, uid: bool) -> Command:
    """SETQUOTA root "(" [resource SP limit *(SP resource SP limit)] ")" (RFC 9208 4.4)."""
    r.sp()
    root = r.astring_str("quota root")
    r.sp()

    def limit() -> tuple[str, int]:
        resource = r.keyword()
        r.sp()
        return resource, r.number64()

    return SetQuota(root, tuple(r.paren_list(limit)))


# Selected -------------------------------------------------------------------------------------


def _uid_expunge(r: Reader, uid: bool) -> Command:
    r.sp()
    return UidExpunge(r.sequence_set())


def _search(r: Reader, uid: bool) -> Command:
    return parse_search(r, uid)


_MACROS = {
    "ALL": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE),
    "FAST": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE),
    "FULL": (FetchItem.FLAGS, FetchItem.INTERNALDATE, FetchItem.RFC822_SIZE, FetchItem.ENVELOPE,
             FetchItem.BODY),
}
_SIMPLE_ATTS = {item.value: item for item in FetchItem}


def _fetch(r: Reader, uid: bool) -> Command:
    """FETCH set (macro / att / "(" att *(SP att) ")") [SP "(" CHANGEDSINCE n ")"] (RFC 7162 3.1.4)."""
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    attributes: list[FetchAttribute] = []
    if r.peek() == ord("("):
        attributes = r.paren_list(lambda: _fetch_att(r), empty=False)
    else:
        start = r.pos
        word = r.keyword() if r.peek() not in (None, ord("(")) else ""
        if word in _MACROS:
            attributes.extend(_MACROS[word])
        else:
            r.pos = start
            attributes.append(_fetch_att(r))
    changed_since: int | None = None
    if r.maybe_sp():
        r.char(b"(")
        r.expect_keyword("CHANGEDSINCE")
        r.sp()
        changed_since = r.number64()
        r.char(b")")
        if FetchItem.MODSEQ not in attributes:
            attributes.append(FetchItem.MODSEQ)
    if uid and FetchItem.UID not in attributes:
        attributes.insert(0, FetchItem.UID)
    return Fetch(sequence, tuple(dict.fromkeys(attributes)), uid, changed_since)


def _fetch_att(r: Reader) -> FetchAttribute:
    start = r.pos
    name = r.atom("fetch attribute").upper()
    bracket = name.find("[")
    if bracket >= 0:  # "[" is an ATOM-CHAR (RFC 3501 9): cut the name there, parse the section
        r.pos = start + bracket
        name = name[:bracket]
    if r.peek() != ord("["):
        simple = _SIMPLE_ATTS.get(name)
        if simple is None:
            raise ParseError(f"unknown fetch attribute {name}")
        return simple
    if name in ("BODY", "BODY.PEEK"):
        section = _section(r)
        return BodySection(section, _partial(r), name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK"):
        part = _binary_part(r)
        return BinarySection(part, _partial(r), name == "BINARY.PEEK")
    if name == "BINARY.SIZE":
        return BinarySize(_binary_part(r))
    raise ParseError(f"unknown fetch attribute {name}")


def _part_numbers(r: Reader) -> tuple[list[int], bool]:
    """section-part = nz-number *("." nz-number); also says whether a "." follows the last one."""
    parts: list[int] = []
    while (nxt := r.peek()) is not None and ord("0") <= nxt <= ord("9"):
        parts.append(r.number(nonzero=True))
        if not r.maybe_char(b"."):
            return parts, False
    return parts, True


def _section(r: Reader) -> Section:
    """section = "[" [section-spec] "]" (RFC 3501 9)."""
    r.char(b"[")
    if r.maybe_char(b"]"):
        return Section()
    parts, dotted = _part_numbers(r)
    if parts and not dotted:
        r.char(b"]")
        return Section(tuple(parts))
    word = r.run_until(b" ]").decode("ascii", "replace").upper()
    fields: tuple[str, ...] = ()
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        fields = tuple(r.paren_list(lambda: r.astring_str("header name"), empty=False))
    elif word not in ("HEADER", "TEXT", "MIME") or (word == "MIME" and not parts):
        raise ParseError("invalid section")
    r.char(b"]")
    return Section(tuple(parts), word, fields)


def _binary_part(r: Reader) -> tuple[int, ...]:
    r.char(b"[")
    parts, dotted = _part_numbers(r)
    if dotted and parts:
        raise ParseError("invalid section part")
    r.char(b"]")
    return tuple(parts)


def _partial(r: Reader) -> Partial | None:
    if not r.maybe_char(b"<"):
        return None
    offset = r.number()
    r.char(b".")
    length = r.number(nonzero=True)
    r.char(b">")
    return Partial(offset, length)


def _store(r: Reader, uid: bool) -> Command:
    """STORE set [SP "(" UNCHANGEDSINCE n ")"] SP [+-]FLAGS[.SILENT] SP flags (RFC 3501 6.4.6)."""
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    unchanged_since: int | None = None
    if r.maybe_char(b"("):
        r.expect_keyword("UNCHANGEDSINCE")
        r.sp()
        unchanged_since = r.number64()
        r.char(b")")
        r.sp()
    mode = StoreMode.REPLACE
    if r.maybe_char(b"+"):
        mode = StoreMode.ADD
    elif r.maybe_char(b"-"):
        mode = StoreMode.REMOVE
    word = r.keyword()
    if word not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == ord("("):
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.maybe_sp():
            flags.append(r.flag())
    return Store(sequence, mode, word.endswith(".SILENT"), frozenset(_storable_flags(flags)), uid,
                 unchanged_since)


def _copy(r: Reader, uid: bool) -> Command:
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    return Copy(sequence, r.mailbox(), uid)


def _move(r: Reader, uid: bool) -> Command:
    r.sp()
    sequence = r.sequence_set()
    r.sp()
    return Move(sequence, r.mailbox(), uid)


_PARSERS: dict[str, Callable[[Reader, bool], Command]] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "ID": _id,
    "STARTTLS": _no_args(StartTls),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "SELECT": _select,
    "EXAMINE": _examine,
    "CREATE": _create,
    "DELETE": _mailbox_only(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_only(Subscribe),
    "UNSUBSCRIBE": _mailbox_only(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(Idle),
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _mailbox_only(GetQuotaRoot),
    "SETQUOTA": _setquota,
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _no_args(Expunge),
    "UID EXPUNGE": _uid_expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _move,
}
