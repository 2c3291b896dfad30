"""SEARCH evaluation (RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 7162 3.1.5) and the values of an
ESEARCH answer (RFC 4731 3.1, RFC 9051 7.3.4).

Theory of operation. A search program is a tree of keys. Most keys look only at the mailbox row
(flags, size, dates, UIDs, sequence numbers, modseq): they are cheap. HEADER/FROM/TO/CC/BCC/
SUBJECT, SENT* and BODY/TEXT need the message's octets: loading and parsing them is the cost
that matters. So every message is evaluated twice at most:

1. Without content, in three-valued logic: a content key answers "unknown" (None); AND is False
   as soon as one operand is False, OR is True as soon as one is True, NOT keeps unknown unknown.
   Most messages are decided here (e.g. `SEEN BODY x` never reads an unseen message).
2. Only the still-unknown messages are loaded (through the shared `MessageContentCache`) and
   evaluated with their content, the cheap operands of every AND/OR first. When no key needs
   more than the header section, a large message has only its header read.

Matching of header and body text (RFC 2047 decoding, charsets, case folding) is the job of
`mailprime.message.imap_search`; this module decides which messages to ask it about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date

from mailprime.domain.errors import NotFound
from mailprime.domain.mail import StoredMessage
from mailprime.message import imap_search
from mailprime.proto.imap.types import (
    RECENT,
    Atom,
    DateField,
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
    SequenceSet,
    SizeField,
    TextField,
    Value,
)
from mailprime.services.imap.content import HEADER_ONLY_MIN, MessageContentCache, ParsedMessage
from mailprime.storage.ports import MailStore

# Messages evaluated with their content between two yields to the event loop.
_YIELD_EVERY = 64
# Costs used to evaluate the cheap operands of AND/OR first (see the theory of operation).
_ROW, _HEADER, _BODY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Numbers:
    """What "*" stands for in this search: the last sequence number and the largest UID."""

    largest_seq: int
    largest_uid: int


async def search(key: SearchKey, messages: Sequence[StoredMessage], *, cache: MessageContentCache,
                 store: MailStore, largest_seq: int | None = None) -> list[int]:
    """The 1-based sequence numbers (positions in `messages`, the session's view in UID order) of
    the messages that match `key`, ascending.

    `largest_seq` is what "*" means in a sequence-set key (default: the number of messages);
    "*" in a UID set is the largest UID in `messages`. A message whose content vanished (expunged
    by another session, its blob released) does not match content keys.
    """
    program = _cheapest_first(key)
    header_only = _cost(program) <= _HEADER
    numbers = _Numbers(largest_seq if largest_seq is not None else len(messages),
                       messages[-1].uid if messages else 0)
    matched: list[int] = []
    loaded = 0
    for seq, message in enumerate(messages, start=1):
        verdict = _evaluate(program, message, seq, numbers, None)
        if verdict is None:
            try:
                if header_only and message.size > HEADER_ONLY_MIN:
                    content = await cache.get_header(store, message.blob_id, size=message.size)
                elif header_only:  # header keys need no MIME tree
                    content = await cache.get_raw(store, message.blob_id, size=message.size)
                else:
                    content = await cache.get(store, message.blob_id, size=message.size)
            except NotFound:
                continue
            verdict = _evaluate(program, message, seq, numbers, content)
            loaded += 1
            if loaded % _YIELD_EVERY == 0:
                # Cache hits never suspend: let other sessions run during a long text search.
                await asyncio.sleep(0)
        if verdict:
            matched.append(seq)
    return matched


def _cost(key: SearchKey) -> int:
    if isinstance(key, SearchText):
        return _BODY
    if isinstance(key, SearchHeader):
        return _HEADER
    if isinstance(key, SearchDate):
        return _HEADER if key.kind in _SENT else _ROW
    if isinstance(key, SearchNot):
        return _cost(key.key)
    if isinstance(key, SearchOr):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, SearchAnd):
        return max((_cost(k) for k in key.keys), default=_ROW)
    return _ROW


def _cheapest_first(key: SearchKey) -> SearchKey:
    """The same program with the operands of every AND and OR sorted by cost (both commute)."""
    if isinstance(key, SearchAnd):
        return SearchAnd(tuple(sorted((_cheapest_first(k) for k in key.keys), key=_cost)))
    if isinstance(key, SearchOr):
        left, right = _cheapest_first(key.left), _cheapest_first(key.right)
        return SearchOr(left, right) if _cost(left) <= _cost(right) else SearchOr(right, left)
    if isinstance(key, SearchNot):
        return SearchNot(_cheapest_first(key.key))
    return key


_SENT = frozenset({DateField.SENTBEFORE, DateField.SENTON, DateField.SENTSINCE})


def _evaluate(key: SearchKey, message: StoredMessage, seq: int, numbers: _Numbers,
              content: ParsedMessage | None) -> bool | None:
    """True/False, or None when the answer depends on content that was not given."""
    if isinstance(key, SearchAnd):
        unknown = False
        for sub in key.keys:
            verdict = _evaluate(sub, message, seq, numbers, content)
            if verdict is False:
                return False
            unknown = unknown or verdict is None
        return None if unknown else True
    if isinstance(key, SearchOr):
        left = _evaluate(key.left, message, seq, numbers, content)
        if left is True:
            return True
        right = _evaluate(key.right, message, seq, numbers, content)
        if right is True:
            return True
        return None if left is None or right is None else False
    if isinstance(key, SearchNot):
        verdict = _evaluate(key.key, message, seq, numbers, content)
        return None if verdict is None else not verdict
    if isinstance(key, SearchText | SearchHeader) or (
            isinstance(key, SearchDate) and key.kind in _SENT):
        return None if content is None else _content_matches(key, content)
    return _row_matches(key, message, seq, numbers)


def _row_matches(key: SearchKey, message: StoredMessage, seq: int, numbers: _Numbers) -> bool:
    """The keys answered from the mailbox row alone."""
    if isinstance(key, SearchAll):
        return True
    if isinstance(key, SearchFlag):
        return _has_flag(message, key.flag) == key.present
    if isinstance(key, SearchSize):
        # RFC 3501 6.4.4: LARGER/SMALLER compare RFC822.SIZE, strictly.
        return message.size > key.size if key.kind is SizeField.LARGER else message.size < key.size
    if isinstance(key, SearchDate):
        return _date_matches(key.kind, _internal_day(message), key.date)
    if isinstance(key, SearchSeq):
        return _in_set(key.sequence, seq, numbers.largest_seq)
    if isinstance(key, SearchUid):
        return _in_set(key.uids, message.uid, numbers.largest_uid)
    if isinstance(key, SearchModSeq):
        # RFC 7162 3.1.5: mod-sequence greater than or equal to the value. The per-flag entry
        # is allowed to be ignored (the store keeps one modseq per message).
        return message.modseq >= key.modseq
    raise TypeError(f"not a row key: {key!r}")


def _has_flag(message: StoredMessage, flag: str) -> bool:
    # The store keeps no \Recent flag (no session "owns" new messages, RFC 3501 2.3.2 allows a
    # server that does not track it): RECENT and NEW match nothing, OLD matches everything.
    if flag == RECENT:
        return False
    if flag in message.flags:
        return True
    # Keywords are matched without regard to case, like the system flags (RFC 9051 2.3.2).
    folded = flag.casefold()
    return any(f.casefold() == folded for f in message.flags)


def _internal_day(message: StoredMessage) -> date:
    """The internal date's day in the server's time zone, which is UTC here (RFC 3501 6.4.4
    compares "disregarding time and timezone"; a fixed zone keeps answers the same on every
    node)."""
    when = message.internal_date
    return (when.astimezone(UTC) if when.tzinfo is not None else when).date()


def _date_matches(kind: DateField, day: date, wanted: date) -> bool:
    if kind in (DateField.BEFORE, DateField.SENTBEFORE):
        return day < wanted
    if kind in (DateField.ON, DateField.SENTON):
        return day == wanted
    return day >= wanted  # SINCE, SENTSINCE: "within or later than"


def _in_set(numbers: SequenceSet, number: int, largest: int) -> bool:
    """Membership with "*" = `largest`; an empty mailbox has no "*" and nothing matches."""
    return largest > 0 and numbers.contains(number, largest)


def _content_matches(key: SearchKey, content: ParsedMessage) -> bool:
    if isinstance(key, SearchHeader):
        return imap_search.header_matches(content.header, key.name, key.value)
    if isinstance(key, SearchText):
        if key.kind is TextField.BODY:
            return imap_search.body_contains(content.raw, content.tree, key.value)
        return imap_search.text_contains(content.raw, content.tree, key.value)
    if isinstance(key, SearchDate):
        # RFC 3501 6.4.4 SENT*: the Date: header's date, disregarding time and zone. A message
        # without a usable Date: header has no sent date and matches none of them.
        sent = imap_search.sent_date(content.header)
        return sent is not None and _date_matches(key.kind, sent, key.date)
    raise TypeError(f"not a content key: {key!r}")


# ESEARCH ---------------------------------------------------------------------------------------


def compact_set(numbers: Sequence[int]) -> str:
    """A sequence set holding `numbers`, runs of consecutive ascending numbers as ranges:
    [1, 2, 3, 5] -> "1:3,5". The order is kept (COPYUID pairs its two sets, RFC 4315 3), so pass
    ascending numbers for the shortest form. Empty input gives "" (no set can be empty: the
    caller omits the item)."""
    return SequenceSet.of(numbers).to_wire()


def esearch_values(numbers: Sequence[int], options: Sequence[str]) -> tuple[Value, ...]:
    """The result items of an ESEARCH answer, after "(TAG ...)" and "UID" which the session
    writes: e.g. (Atom("MIN"), 2, Atom("COUNT"), 3).

    `numbers` are the matches, ascending; `options` the RETURN options (upper case; empty means
    ALL, RFC 4731 3.1). Items come in the order MIN, MAX, COUNT, ALL. MIN, MAX and ALL are left
    out when nothing matched; COUNT is always given when asked (RFC 4731 3.1, RFC 9051 6.4.4).
    """
    wanted = set(options) or {"ALL"}
    values: list[Value] = []
    if "MIN" in wanted and numbers:
        values += [Atom("MIN"), min(numbers)]
    if "MAX" in wanted and numbers:
        values += [Atom("MAX"), max(numbers)]
    if "COUNT" in wanted:
        values += [Atom("COUNT"), len(numbers)]
    if "ALL" in wanted and numbers:
        values += [Atom("ALL"), Atom(compact_set(sorted(numbers)))]
    return tuple(values)
