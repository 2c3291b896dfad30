"""SEARCH programs (RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 4731 ESEARCH, RFC 7162 3.1.5 MODSEQ)."""

from __future__ import annotations

from collections.abc import Callable

from mailprime.proto.imap.command_types import (
    DateField,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSeq,
    SearchSize,
    SearchText,
    SearchUid,
    SizeField,
    TextField,
)
from mailprime.proto.imap.parser import RECENT, ParseError, Reader
from mailprime.proto.imap.response_types import Atom, ParenList, ResponseCode, ResponseStatus

# RFC 3501 6.4.4: US-ASCII MUST be supported; RFC 9051 6.4.4 adds UTF-8. Both decode as UTF-8.
SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")
# RFC 4731 3.1 / RFC 9051 6.4.4: the ESEARCH return options served here (SAVE is not).
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT"})

_FLAG_KEYS: dict[str, SearchKey] = {
    "ANSWERED": SearchFlag("\\Answered"),
    "DELETED": SearchFlag("\\Deleted"),
    "DRAFT": SearchFlag("\\Draft"),
    "FLAGGED": SearchFlag("\\Flagged"),
    "SEEN": SearchFlag("\\Seen"),
    "RECENT": SearchFlag(RECENT),
    "UNANSWERED": SearchFlag("\\Answered", present=False),
    "UNDELETED": SearchFlag("\\Deleted", present=False),
    "UNDRAFT": SearchFlag("\\Draft", present=False),
    "UNFLAGGED": SearchFlag("\\Flagged", present=False),
    "UNSEEN": SearchFlag("\\Seen", present=False),
    "OLD": SearchFlag(RECENT, present=False),
    "NEW": SearchAnd((SearchFlag(RECENT), SearchFlag("\\Seen", present=False))),
    "ALL": SearchAll(),
}
_HEADER_KEYS = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS = {d.value: d for d in DateField}
_SIZE_KEYS = {s.value: s for s in SizeField}
_TEXT_KEYS = {t.value: t for t in TextField}


def parse_search(r: Reader, uid: bool) -> Search:
    """After "SEARCH": [RETURN (...)] [CHARSET x] key *(SP key)."""
    r.sp()
    return_options: tuple[str, ...] | None = None
    charset: str | None = None
    start = r.pos
    word = _peek_word(r)
    if word == "RETURN":
        r.keyword()
        r.sp()
        options = r.paren_atoms()
        unknown = [o for o in options if o not in RETURN_OPTIONS]
        if unknown:
            raise ParseError(f"unsupported SEARCH RETURN option {unknown[0]}")
        return_options = tuple(dict.fromkeys(options))
        r.sp()
        start = r.pos
        word = _peek_word(r)
    if word == "CHARSET":
        r.pos = start
        r.keyword()
        r.sp()
        charset = r.astring_str("charset").upper()
        if charset not in SUPPORTED_CHARSETS:
            raise ParseError(
                f"charset {charset} is not supported",
                ResponseCode("BADCHARSET", (ParenList(tuple(Atom(c) for c in SUPPORTED_CHARSETS)),)),
                ResponseStatus.NO,
            )
        r.sp()
    keys = [_key(r, 0)]
    while r.maybe_sp():
        keys.append(_key(r, 0))
    r.expect_end()
    key = keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    return Search(key=key, charset=charset, uid=uid, return_options=return_options)


def _peek_word(r: Reader) -> str:
    """The next atom in upper case without consuming it ("" if none)."""
    start = r.pos
    try:
        return r.keyword()
    except ParseError:
        return ""
    finally:
        r.pos = start


def _string(r: Reader) -> str:
    r.sp()
    return r.text(r.astring(), "search string")


def _key(r: Reader, depth: int) -> SearchKey:
    if depth >= r.max_nesting:
        raise ParseError("search keys nested too deeply")
    nxt = r.peek()
    if nxt == ord("("):
        keys = r.paren_list(lambda: _key(r, depth + 1), empty=False)
        return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))
    if nxt is not None and (ord("0") <= nxt <= ord("9") or nxt == ord("*")):
        return SearchSeq(r.sequence_set())
    word = r.keyword()
    simple = _FLAG_KEYS.get(word)
    if simple is not None:
        return simple
    parse = _ARG_KEYS.get(word)
    if parse is None:
        if word in _HEADER_KEYS:
            return SearchHeader(word, _string(r))
        if word in _DATE_KEYS:
            r.sp()
            return SearchDate(_DATE_KEYS[word], r.date())
        if word in _SIZE_KEYS:
            r.sp()
            return SearchSize(_SIZE_KEYS[word], r.number())
        if word in _TEXT_KEYS:
            return SearchText(_TEXT_KEYS[word], _string(r))
        raise ParseError(f"unknown search key {word}")
    return parse(r, depth)


def _keyword_key(present: bool) -> Callable[[Reader, int], SearchKey]:
    def parse(r: Reader, depth: int) -> SearchKey:
        r.sp()
        flag = r.flag()
        return SearchFlag(flag, present)
    return parse


def _header(r: Reader, depth: int) -> SearchKey:
    r.sp()
    name = r.text(r.astring(), "header name")
    return SearchHeader(name, _string(r))


def _not(r: Reader, depth: int) -> SearchKey:
    r.sp()
    return SearchNot(_key(r, depth + 1))


def _or(r: Reader, depth: int) -> SearchKey:
    r.sp()
    left = _key(r, depth + 1)
    r.sp()
    return SearchOr(left, _key(r, depth + 1))


def _uid(r: Reader, depth: int) -> SearchKey:
    r.sp()
    return SearchUid(r.sequence_set())


def _modseq(r: Reader, depth: int) -> SearchKey:
    """MODSEQ [entry-name SP entry-type-req SP] mod-sequence-valzer (RFC 7162 3.1.5)."""
    r.sp()
    entry: tuple[str, str] | None = None
    if r.peek() in (0x22, ord("{")):
        name = r.text(r.string(), "entry name")
        r.sp()
        kind = r.keyword().lower()
        if kind not in ("priv", "shared", "all"):
            raise ParseError("invalid MODSEQ entry type")
        entry = (name, kind)
        r.sp()
    return SearchModSeq(r.number64(), entry)


_ARG_KEYS: dict[str, Callable[[Reader, int], SearchKey]] = {
    "KEYWORD": _keyword_key(True),
    "UNKEYWORD": _keyword_key(False),
    "HEADER": _header,
    "NOT": _not,
    "OR": _or,
    "UID": _uid,
    "MODSEQ": _modseq,
}
