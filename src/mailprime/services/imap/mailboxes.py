"""Mailbox names as IMAP sees them: the hierarchy ("/"), validity of new names, and which names a
LIST or LSUB pattern matches with which attributes (RFC 3501 6.3.8-6.3.9, RFC 9051 6.3.9,
RFC 5258 LIST-EXTENDED, RFC 3348 CHILDREN, RFC 6154 SPECIAL-USE).

Pure functions over the account's mailbox rows: no storage calls, so they are cheap to test.
Every parent of a mailbox normally exists (CREATE makes missing parents, RFC 3501 6.3.3, and
DELETE refuses a mailbox with children, RFC 9051 6.3.4); a parent that is missing anyway is
listed as \\Noselect when a pattern matches it, as RFC 3501 6.3.8 asks for "%".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailprime.domain.mail import Mailbox
from mailprime.proto.imap.types import ParenList, String, Value

DELIMITER = "/"
INBOX = "INBOX"
# RFC 3501 and 9051 set no bound on names; ours keeps a name (in any encoding) well inside
# the 8192-octet command line of RFC 7162 3, and the hierarchy shallow enough to list.
MAX_NAME_LENGTH = 1000
MAX_LEVELS = 40

HAS_CHILDREN = "\\HasChildren"
HAS_NO_CHILDREN = "\\HasNoChildren"
NOSELECT = "\\Noselect"
SUBSCRIBED = "\\Subscribed"


def normalize(name: str) -> str:
    """RFC 3501 5.1: INBOX is case-insensitive; a trailing delimiter only says "will have
    children" (RFC 3501 6.3.3) and is dropped."""
    if name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]
    return INBOX if name.upper() == INBOX else name


def invalid_name(name: str) -> str | None:
    """Why `name` (already normalized) cannot be created, or None if it can."""
    if not name:
        return "Mailbox name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"Mailbox name is longer than {MAX_NAME_LENGTH} characters"
    if any(ch in "*%" for ch in name):
        return "Mailbox names cannot contain the wildcards * and %"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return "Mailbox names cannot contain control characters"
    parts = name.split(DELIMITER)
    if any(not part for part in parts):
        return "Mailbox names cannot have empty hierarchy levels"
    if len(parts) > MAX_LEVELS:
        return f"Mailbox names cannot be deeper than {MAX_LEVELS} levels"
    return None


def parents(name: str) -> list[str]:
    """"a/b/c" -> ["a", "a/b"]: the superiors CREATE makes first."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def is_inferior(name: str, of: str) -> bool:
    return name.startswith(of + DELIMITER)


def has_children(name: str, names: Iterable[str]) -> bool:
    return any(is_inferior(other, name) for other in names)


def sort_key(name: str) -> tuple[int, str]:
    """INBOX first, then by name (clients show this order)."""
    return (0, "") if name == INBOX else (1, name)


# Patterns ---------------------------------------------------------------------------------


def canonical_pattern(reference: str, pattern: str) -> str:
    """The reference and pattern joined as RFC 3501 6.3.8 describes (the reference is a prefix;
    a pattern starting with the delimiter is taken from the root)."""
    if pattern.startswith(DELIMITER) or not reference:
        return pattern
    return reference + pattern


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """"*" matches anything, "%" anything but the delimiter (RFC 3501 6.3.8). INBOX is
    case-insensitive (RFC 3501 5.1), also as the first level of its children's names."""
    head = pattern[:len(INBOX)]
    if head.upper() == INBOX and pattern[len(INBOX):len(INBOX) + 1] in ("", DELIMITER, "*", "%"):
        pattern = INBOX + pattern[len(INBOX):]
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def matches(regex: re.Pattern[str], name: str) -> bool:
    return regex.fullmatch(name) is not None


# LIST ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One `* LIST` (or `* LSUB`) line to send."""

    name: str
    attributes: tuple[str, ...]
    extra: tuple[Value, ...] = ()  # LIST-EXTENDED data, e.g. ("CHILDINFO" ("SUBSCRIBED"))
    mailbox: Mailbox | None = None  # None: a \Noselect level that is not a mailbox


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A LIST request in plain terms (basic LIST is the all-False case)."""

    patterns: tuple[str, ...]  # already joined with the reference
    subscribed_only: bool = False  # selection option SUBSCRIBED
    recursive_match: bool = False  # RECURSIVEMATCH (RFC 5258 3.1)
    special_use_only: bool = False  # selection option SPECIAL-USE (RFC 6154 5.1)
    return_subscribed: bool = False  # RETURN (SUBSCRIBED) or implied by the selection


def list_entries(mailboxes: Sequence[Mailbox], query: ListQuery) -> list[ListEntry]:
    """The LIST response lines for `query`, INBOX first then by name."""
    by_name = {m.name: m for m in mailboxes}
    names = set(by_name)
    missing_parents = {p for n in names for p in parents(n)} - names
    regexes = [compile_pattern(p) for p in query.patterns]
    subscribed = {m.name for m in mailboxes if m.subscribed}
    entries: list[ListEntry] = []
    for name in sorted(names | missing_parents, key=sort_key):
        if not any(matches(rx, name) for rx in regexes):
            continue
        box = by_name.get(name)
        children = has_children(name, names)
        attributes: list[str] = []
        extra: tuple[Value, ...] = ()
        if box is None:
            attributes.append(NOSELECT)
        if query.subscribed_only:
            subscribed_child = any(is_inferior(s, name) for s in subscribed)
            # RFC 5258 3.5: with RECURSIVEMATCH a parent whose children are subscribed is
            # listed (without \Subscribed) so the client sees the tree.
            if name not in subscribed and not (query.recursive_match and subscribed_child):
                continue
            if query.recursive_match and subscribed_child:
                extra = (String("CHILDINFO"), ParenList((String("SUBSCRIBED"),)))
        if query.special_use_only and (box is None or box.special_use is None):
            continue
        attributes.append(HAS_CHILDREN if children else HAS_NO_CHILDREN)
        if box is not None and box.special_use is not None:
            attributes.append(box.special_use)
        if (query.return_subscribed or query.subscribed_only) and name in subscribed:
            attributes.append(SUBSCRIBED)
        entries.append(ListEntry(name, tuple(attributes), extra, box))
    return entries


def lsub_entries(mailboxes: Sequence[Mailbox], pattern: str) -> list[ListEntry]:
    """LSUB (RFC 3501 6.3.9): subscribed names matching; with "%", a level that is not itself
    subscribed but holds subscribed names is listed as \\Noselect."""
    regex = compile_pattern(pattern)
    by_name = {m.name: m for m in mailboxes}
    subscribed = {m.name for m in mailboxes if m.subscribed}
    levels = {p for n in subscribed for p in parents(n)} - subscribed
    entries = []
    for name in sorted(subscribed | levels, key=sort_key):
        if not matches(regex, name):
            continue
        if name in subscribed:
            box = by_name[name]
            entries.append(ListEntry(name, (box.special_use,) if box.special_use else (), (), box))
        elif pattern.endswith("%"):
            entries.append(ListEntry(name, (NOSELECT,)))
    return entries
